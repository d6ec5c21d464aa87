// virtio_blk.c - virtio-blk requests: header, data, status (virtio 1.x, 5.2.6).
#include "virtio.h"

struct blk_header {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

int virtio_blk_request(struct virtq *q, uint32_t type, uint64_t sector, void *data,
		       uint32_t len)
{
	static struct blk_header header;
	static volatile uint8_t status;
	struct virtq_buf bufs[3];
	unsigned n = 0;

	header.type = type;
	header.reserved = 0;
	header.sector = sector;
	status = 0xFF;
	bufs[n++] = (struct virtq_buf){ &header, sizeof(header), 0 };
	if (len)
		bufs[n++] = (struct virtq_buf){ data, len, type != VIRTIO_BLK_T_OUT };
	bufs[n++] = (struct virtq_buf){ (const void *)&status, 1, 1 };
	virtq_add(q, bufs, n, 1);
	if (virtq_wait(q, 0) < 0)
		return -1;
	return status;
}
