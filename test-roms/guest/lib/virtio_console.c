// virtio_console.c - output through virtio-console port 0 (virtio 1.x, 5.3).
#include "virtio.h"

#define QUEUE_SIZE 16

static uint8_t rx_mem[VIRTQ_BYTES(QUEUE_SIZE)] __attribute__((aligned(4096)));
static uint8_t tx_mem[VIRTQ_BYTES(QUEUE_SIZE)] __attribute__((aligned(4096)));

int virtio_console_open(const struct multiboot_info *mbi, struct virtio_console *con)
{
	if (virtio_find(mbi, VIRTIO_ID_CONSOLE, 0, &con->dev) ||
	    virtio_start(&con->dev, 0) ||
	    virtq_setup(&con->dev, &con->rx, 0, rx_mem, QUEUE_SIZE) ||
	    virtq_setup(&con->dev, &con->tx, 1, tx_mem, QUEUE_SIZE))
		return -1;
	virtio_ready(&con->dev);
	return 0;
}

int virtio_console_puts(struct virtio_console *con, const char *s)
{
	uint32_t len = 0;

	while (s[len])
		len++;
	if (!len)
		return 0;
	struct virtq_buf b = { s, len, 0 };
	virtq_add(&con->tx, &b, 1, 1);
	return virtq_wait(&con->tx, 0) < 0 ? -1 : 0;
}
