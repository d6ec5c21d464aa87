// virtio_net.c - a virtio-net driver: posted receive buffers, one frame sent
// at a time (virtio 1.x, 5.1.6).
#include "virtio.h"

#define QUEUE_SIZE 16

static uint8_t rx_mem[VIRTQ_BYTES(QUEUE_SIZE)] __attribute__((aligned(4096)));
static uint8_t tx_mem[VIRTQ_BYTES(QUEUE_SIZE)] __attribute__((aligned(4096)));
static uint8_t rx_bufs[VIRTIO_NET_RX_BUFS][VIRTIO_NET_BUF];
static uint8_t tx_buf[VIRTIO_NET_BUF];

int virtio_net_open(const struct multiboot_info *mbi, struct virtio_net *net)
{
	if (virtio_find(mbi, VIRTIO_ID_NET, 0, &net->dev) ||
	    virtio_start(&net->dev, VIRTIO_NET_F_MAC) ||
	    virtq_setup(&net->dev, &net->rx, 0, rx_mem, QUEUE_SIZE) ||
	    virtq_setup(&net->dev, &net->tx, 1, tx_mem, QUEUE_SIZE))
		return -1;
	for (unsigned i = 0; i < 6; i++)
		net->mac[i] = (uint8_t)(virtio_config32(&net->dev, i & ~3u) >> (8 * (i & 3)));
	virtio_ready(&net->dev);
	for (unsigned i = 0; i < VIRTIO_NET_RX_BUFS; i++) {
		struct virtq_buf b = { rx_bufs[i], VIRTIO_NET_BUF, 1 };
		virtq_add(&net->rx, &b, 1, i + 1 == VIRTIO_NET_RX_BUFS);
	}
	return 0;
}

int virtio_net_send(struct virtio_net *net, const void *frame, uint32_t len)
{
	if (len > VIRTIO_NET_BUF - VIRTIO_NET_HDR)
		return -1;
	for (unsigned i = 0; i < VIRTIO_NET_HDR; i++)
		tx_buf[i] = 0;	// no offloads: flags and gso_type 0
	for (uint32_t i = 0; i < len; i++)
		tx_buf[VIRTIO_NET_HDR + i] = ((const uint8_t *)frame)[i];
	struct virtq_buf b = { tx_buf, VIRTIO_NET_HDR + len, 0 };
	virtq_add(&net->tx, &b, 1, 1);
	return virtq_wait(&net->tx, 0) < 0 ? -1 : 0;
}

int virtio_net_recv(struct virtio_net *net, void *out, uint32_t max)
{
	uint32_t len;
	int head = virtq_wait(&net->rx, &len);

	if (head < 0 || (unsigned)head >= VIRTIO_NET_RX_BUFS || len < VIRTIO_NET_HDR)
		return -1;
	len -= VIRTIO_NET_HDR;
	for (uint32_t i = 0; i < len && i < max; i++)
		((uint8_t *)out)[i] = rx_bufs[head][VIRTIO_NET_HDR + i];
	virtq_repost(&net->rx, (uint16_t)head, 1);
	return (int)len;
}
