// virtio.c - the virtio-mmio transport and split virtqueues, driver side.
#include "virtio.h"

// Register offsets (virtio 1.x, 4.2.2).
#define R_MAGIC 0x000
#define R_VERSION 0x004
#define R_DEVICE_ID 0x008
#define R_DEVICE_FEATURES 0x010
#define R_DEVICE_FEATURES_SEL 0x014
#define R_DRIVER_FEATURES 0x020
#define R_DRIVER_FEATURES_SEL 0x024
#define R_QUEUE_SEL 0x030
#define R_QUEUE_NUM_MAX 0x034
#define R_QUEUE_NUM 0x038
#define R_QUEUE_READY 0x044
#define R_QUEUE_NOTIFY 0x050
#define R_STATUS 0x070
#define R_QUEUE_DESC_LOW 0x080
#define R_QUEUE_DESC_HIGH 0x084
#define R_QUEUE_DRIVER_LOW 0x090
#define R_QUEUE_DRIVER_HIGH 0x094
#define R_QUEUE_DEVICE_LOW 0x0A0
#define R_QUEUE_DEVICE_HIGH 0x0A4
#define R_CONFIG 0x100

#define MAGIC 0x74726976	/* "virt" */
#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define F_VERSION_1_HIGH 1	/* bit 32: bit 0 of the high word */

#define MAX_POLLS 10000000u

static uint32_t rd(struct virtio_dev *dev, unsigned off)
{
	return *(volatile uint32_t *)(dev->base + off);
}

static void wr(struct virtio_dev *dev, unsigned off, uint32_t v)
{
	*(volatile uint32_t *)(dev->base + off) = v;
}

static void barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

static int starts_with(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

// Parses a number in C notation (decimal or 0x hex) at *s, moving past it.
static unsigned long parse_num(const char **s)
{
	const char *p = *s;
	unsigned long n = 0;
	unsigned base = 10;

	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	for (;; p++) {
		unsigned d;
		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a' + 10);
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = (unsigned)(*p - 'A' + 10);
		else
			break;
		n = n * base + d;
	}
	*s = p;
	return n;
}

int virtio_find(const struct multiboot_info *mbi, uint32_t id, unsigned n,
		struct virtio_dev *dev)
{
	static const char key[] = "virtio_mmio.device=";
	const char *line = mb_cmdline(mbi);

	for (const char *s = line; *s; s++) {
		if ((s != line && s[-1] != ' ') || !starts_with(s, key))
			continue;
		const char *p = s + sizeof(key) - 1;
		parse_num(&p);			// the window's size
		if (*p == 'K' || *p == 'k' || *p == 'M')
			p++;
		if (*p++ != '@')
			continue;
		uintptr_t base = parse_num(&p);
		if (*p++ != ':')
			continue;
		struct virtio_dev d = { base, (unsigned)parse_num(&p), 0 };
		if (rd(&d, R_MAGIC) != MAGIC || rd(&d, R_VERSION) != 2)
			continue;
		d.device_id = rd(&d, R_DEVICE_ID);
		if (d.device_id != id)
			continue;
		if (n-- == 0) {
			*dev = d;
			return 0;
		}
	}
	return -1;
}

int virtio_start(struct virtio_dev *dev, uint32_t features)
{
	wr(dev, R_STATUS, 0);
	wr(dev, R_STATUS, S_ACKNOWLEDGE);
	wr(dev, R_STATUS, S_ACKNOWLEDGE | S_DRIVER);
	wr(dev, R_DEVICE_FEATURES_SEL, 0);
	uint32_t offered = rd(dev, R_DEVICE_FEATURES);
	wr(dev, R_DRIVER_FEATURES_SEL, 0);
	wr(dev, R_DRIVER_FEATURES, offered & features);
	wr(dev, R_DRIVER_FEATURES_SEL, 1);
	wr(dev, R_DRIVER_FEATURES, F_VERSION_1_HIGH);
	wr(dev, R_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
	return (rd(dev, R_STATUS) & S_FEATURES_OK) ? 0 : -1;
}

int virtq_setup(struct virtio_dev *dev, struct virtq *q, uint16_t index, void *mem,
		uint16_t size)
{
	uintptr_t at = (uintptr_t)mem;
	uintptr_t used = (at + size * 16u + 6u + 2u * size + 4095u) & ~(uintptr_t)4095;

	wr(dev, R_QUEUE_SEL, index);
	if (rd(dev, R_QUEUE_NUM_MAX) < size || rd(dev, R_QUEUE_READY))
		return -1;
	for (uint32_t i = 0; i < VIRTQ_BYTES(size); i++)
		((volatile uint8_t *)mem)[i] = 0;
	q->dev = dev;
	q->index = index;
	q->size = size;
	q->desc = (volatile struct virtq_desc *)at;
	q->avail = (volatile struct virtq_avail *)(at + size * 16u);
	q->used = (volatile struct virtq_used *)used;
	q->next_desc = 0;
	q->avail_idx = 0;
	q->last_used = 0;
	wr(dev, R_QUEUE_NUM, size);
	wr(dev, R_QUEUE_DESC_LOW, (uint32_t)at);
	wr(dev, R_QUEUE_DESC_HIGH, 0);
	wr(dev, R_QUEUE_DRIVER_LOW, (uint32_t)(uintptr_t)q->avail);
	wr(dev, R_QUEUE_DRIVER_HIGH, 0);
	wr(dev, R_QUEUE_DEVICE_LOW, (uint32_t)used);
	wr(dev, R_QUEUE_DEVICE_HIGH, 0);
	wr(dev, R_QUEUE_READY, 1);
	return rd(dev, R_QUEUE_READY) == 1 ? 0 : -1;
}

void virtio_ready(struct virtio_dev *dev)
{
	wr(dev, R_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
}

uint32_t virtio_status(struct virtio_dev *dev)
{
	return rd(dev, R_STATUS);
}

uint32_t virtio_config32(struct virtio_dev *dev, unsigned offset)
{
	return rd(dev, R_CONFIG + offset);
}

uint16_t virtq_add(struct virtq *q, const struct virtq_buf *bufs, unsigned n, int notify)
{
	uint16_t head = q->next_desc;

	for (unsigned i = 0; i < n; i++) {
		uint16_t d = (uint16_t)((head + i) % q->size);
		q->desc[d].addr = (uint32_t)(uintptr_t)bufs[i].addr;
		q->desc[d].len = bufs[i].len;
		q->desc[d].flags = (uint16_t)((i + 1 < n ? VIRTQ_DESC_F_NEXT : 0) |
					      (bufs[i].writable ? VIRTQ_DESC_F_WRITE : 0));
		q->desc[d].next = (uint16_t)((d + 1) % q->size);
	}
	q->next_desc = (uint16_t)((head + n) % q->size);
	virtq_repost(q, head, notify);
	return head;
}

void virtq_repost(struct virtq *q, uint16_t head, int notify)
{
	q->avail->ring[q->avail_idx % q->size] = head;
	barrier();		// the entry before the index that publishes it
	q->avail->idx = ++q->avail_idx;
	barrier();
	if (notify)
		virtq_notify(q);
}

void virtq_notify(struct virtq *q)
{
	wr(q->dev, R_QUEUE_NOTIFY, q->index);
}

int virtq_take(struct virtq *q, uint32_t *len)
{
	if (q->used->idx == q->last_used)
		return -1;
	barrier();
	volatile struct virtq_used_elem *e = &q->used->ring[q->last_used % q->size];
	q->last_used++;
	if (len)
		*len = e->len;
	return (int)e->id;
}

int virtq_wait(struct virtq *q, uint32_t *len)
{
	for (unsigned i = 0; i < MAX_POLLS; i++) {
		int id = virtq_take(q, len);
		if (id >= 0)
			return id;
	}
	return -1;
}
