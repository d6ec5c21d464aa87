/*
 * virtio.h - a guest driver for virtio-mmio devices (virtio 1.x, split
 * virtqueues) and the request formats of virtio-blk, -console and -net
 * (lib/virtio.c, lib/virtio_blk.c).
 *
 * Devices are found as Linux finds them on a board without a device tree:
 * from "virtio_mmio.device=<size>@<base>:<irq>" words on the command line,
 * which Popek and QEMU's microvm machine both append.  The driver polls
 * the used ring: completions cost no exit, only the notification does.
 */
#ifndef POPEK_VIRTIO_H
#define POPEK_VIRTIO_H

#include <stdint.h>
#include "popek.h"

/* Device IDs (virtio 1.x, 5). */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3

/* Descriptor flags. */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];
};

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};

struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[];
};

struct virtio_dev {
	uintptr_t base;		/* the register window */
	unsigned irq;		/* its PIC line */
	uint32_t device_id;
};

struct virtq {
	struct virtio_dev *dev;
	uint16_t index;		/* the queue's number on the device */
	uint16_t size;
	volatile struct virtq_desc *desc;
	volatile struct virtq_avail *avail;
	volatile struct virtq_used *used;
	uint16_t next_desc;	/* descriptors are handed out in turn */
	uint16_t avail_idx;	/* the driver's copy of avail->idx */
	uint16_t last_used;	/* used entries taken so far */
};

/* One buffer of a chain. */
struct virtq_buf {
	const void *addr;
	uint32_t len;
	int writable;		/* the device writes it */
};

/* Bytes of page-aligned memory a queue of `size` entries needs. */
#define VIRTQ_BYTES(size) \
	((((size) * 16u + 6u + 2u * (size)) + 4095u) / 4096u * 4096u + 6u + 8u * (size))

/* The n-th (from 0) device of type `id` the command line announces, checked
 * to be a modern virtio-mmio device: 0, or -1 if there is none. */
int virtio_find(const struct multiboot_info *mbi, uint32_t id, unsigned n,
		struct virtio_dev *dev);
/* Resets the device and negotiates VIRTIO_F_VERSION_1 plus `features`
 * (bits below 32): 0, or -1 if the device refuses. */
int virtio_start(struct virtio_dev *dev, uint32_t features);
/* Sets queue `index` up with `size` entries in `mem` (VIRTQ_BYTES(size),
 * page-aligned): 0, or -1 if the device refuses. */
int virtq_setup(struct virtio_dev *dev, struct virtq *q, uint16_t index, void *mem,
		uint16_t size);
/* DRIVER_OK: the device may now use its queues. */
void virtio_ready(struct virtio_dev *dev);
/* The Status register (DEVICE_NEEDS_RESET is 0x40). */
uint32_t virtio_status(struct virtio_dev *dev);
/* A 32-bit word of the device's configuration space. */
uint32_t virtio_config32(struct virtio_dev *dev, unsigned offset);
/* Makes a chain of n buffers available; notifies the device if `notify`.
 * Returns its head. */
uint16_t virtq_add(struct virtq *q, const struct virtq_buf *bufs, unsigned n, int notify);
/* Makes the chain at `head`, already in the table, available again. */
void virtq_repost(struct virtq *q, uint16_t head, int notify);
/* Notifies the device of new buffers on q. */
void virtq_notify(struct virtq *q);
/* Takes the next used element: its head and length in *len; -1 if the
 * device has used nothing (yet). */
int virtq_take(struct virtq *q, uint32_t *len);
/* virtq_take, polling up to a bound: -1 if nothing came. */
int virtq_wait(struct virtq *q, uint32_t *len);

/* virtio-blk (lib/virtio_blk.c): one request at a time on queue 0. */
#define VIRTIO_BLK_F_FLUSH (1u << 9)
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
/* Sends a request: type, first sector, `len` bytes of data (none for a
 * flush).  Returns the status byte (0 = OK), or -1 if nothing came back. */
int virtio_blk_request(struct virtq *q, uint32_t type, uint64_t sector, void *data,
		       uint32_t len);

/* virtio-net (lib/virtio_net.c): queue 0 receives, queue 1 transmits;
 * every frame behind a 12-byte virtio_net_hdr_v1. */
#define VIRTIO_NET_F_MAC (1u << 5)
#define VIRTIO_NET_HDR 12u
#define VIRTIO_NET_RX_BUFS 8u
#define VIRTIO_NET_BUF 2048u
struct virtio_net {
	struct virtio_dev dev;
	struct virtq rx, tx;
	uint8_t mac[6];
};
/* Finds and starts the first virtio-net device, receive buffers posted:
 * 0, or -1. */
int virtio_net_open(const struct multiboot_info *mbi, struct virtio_net *net);
/* Sends an Ethernet frame (without the virtio header): 0, or -1. */
int virtio_net_send(struct virtio_net *net, const void *frame, uint32_t len);
/* Waits for a frame, copies at most max bytes of it to out (without the
 * virtio header) and reposts the buffer: the frame's length, or -1. */
int virtio_net_recv(struct virtio_net *net, void *out, uint32_t max);

/* virtio-console (lib/virtio_console.c): port 0, output on queue 1. */
struct virtio_console {
	struct virtio_dev dev;
	struct virtq rx, tx;
};
/* Finds and starts the first virtio-console device: 0, or -1. */
int virtio_console_open(const struct multiboot_info *mbi, struct virtio_console *con);
/* Writes a string through it: 0, or -1. */
int virtio_console_puts(struct virtio_console *con, const char *s);

#endif
