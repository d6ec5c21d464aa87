// rom: writes kib=N (default 1024, a multiple of 64) KiB of known data to a disk, reads it back, checks it
//
// The disk workload of the virtio study: the same data moved through the
// ATA PIO disk or through virtio-blk, so the host can count what each costs
// (VM exits per KiB, notifications, interrupts).  It uses virtio-blk when
// the command line announces one (virtio_mmio.device=...), else the ATA
// disk on the primary channel.  Requests are 64 KiB: one virtio request,
// or one READ/WRITE MULTIPLE of 128 sectors.  The data at sector s, word i
// is a hash of (s, i, seed=kib), so a sector read from the wrong place or a
// stale run's data fails the check.
//
// Prints the device, the disk's identity and size, then PASS or FAIL lines;
// exits 0 when everything matched.
#include "ata.h"
#include "popek.h"
#include "virtio.h"

#define CHUNK (64u << 10)
#define CHUNK_SECTORS (CHUNK / 512u)
#define QUEUE_SIZE 16

static uint32_t buf[CHUNK / 4];
static uint8_t queue_mem[VIRTQ_BYTES(QUEUE_SIZE)] __attribute__((aligned(4096)));
static struct virtio_dev blk_dev;
static struct virtq blk_q;
static int use_virtio;

static uint32_t word_at(uint32_t sector, uint32_t i, uint32_t seed)
{
	uint32_t x = sector * 0x9E3779B1u ^ (i + seed * 0x85EBCA77u);

	x ^= x >> 15;
	x *= 0x2C1B3C6Du;
	x ^= x >> 12;
	return x;
}

static void fill(uint32_t sector, uint32_t seed)
{
	for (uint32_t i = 0; i < CHUNK / 4; i++)
		buf[i] = word_at(sector + i / 128, i % 128, seed);
}

// Counts the words of buf that are not what sector.. should hold.
static uint32_t mismatches(uint32_t sector, uint32_t seed)
{
	uint32_t bad = 0;

	for (uint32_t i = 0; i < CHUNK / 4; i++)
		bad += buf[i] != word_at(sector + i / 128, i % 128, seed);
	return bad;
}

static int transfer(int write, uint32_t sector)
{
	if (use_virtio)
		return virtio_blk_request(&blk_q, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN,
					  sector, buf, CHUNK);
	return write ? ata_write(sector, CHUNK_SECTORS, buf) : ata_read(sector, CHUNK_SECTORS, buf);
}

static int flush(void)
{
	if (use_virtio)
		return virtio_blk_request(&blk_q, VIRTIO_BLK_T_FLUSH, 0, 0, 0);
	return ata_flush();
}

// Sets the device up; prints what it is. Returns the disk's size in
// sectors, or 0 if there is no usable disk.
static uint32_t open_disk(const struct multiboot_info *mbi)
{
	static char id[41];

	if (virtio_find(mbi, VIRTIO_ID_BLOCK, 0, &blk_dev) == 0) {
		use_virtio = 1;
		if (virtio_start(&blk_dev, VIRTIO_BLK_F_FLUSH) ||
		    virtq_setup(&blk_dev, &blk_q, 0, queue_mem, QUEUE_SIZE))
			return 0;
		virtio_ready(&blk_dev);
		// capacity, in sectors: the config space's first 64 bits
		uint32_t sectors = virtio_config32(&blk_dev, 0);
		for (unsigned i = 0; i < sizeof(id); i++)
			id[i] = 0;
		if (virtio_blk_request(&blk_q, VIRTIO_BLK_T_GET_ID, 0, id, 20))
			id[0] = 0;
		serial_puts("disk: virtio-blk at ");
		print_hex32((uint32_t)blk_dev.base);
		serial_puts(", irq ");
		print_udec(blk_dev.irq);
		serial_puts("\ndisk: id ");
		serial_puts(id);
		serial_puts("\n");
		return sectors;
	}
	static uint16_t ident[256];
	if (ata_identify(ident))
		return 0;
	if (ata_set_multiple())
		return 0;
	ata_id_string(ident, 10, 10, id);
	serial_puts("disk: ata pio at 0x1f0, irq 14\ndisk: id ");
	// The serial is right-justified in some drives: skip leading spaces.
	const char *s = id;
	while (*s == ' ')
		s++;
	serial_puts(s);
	serial_puts("\n");
	return ident[60] | (uint32_t)ident[61] << 16;
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	uint32_t kib = (uint32_t)cmdline_ulong(mbi, "kib", 1024);
	uint32_t chunks = kib / (CHUNK >> 10);

	(void)magic;
	uint32_t sectors = open_disk(mbi);
	if (!check_true("disk-found", sectors != 0, "no virtio-blk announced and no ATA disk"))
		return 1;
	serial_puts("disk: ");
	print_udec(sectors / 2048);
	serial_puts(" MiB, moving ");
	print_udec(chunks * (CHUNK >> 10));
	serial_puts(" KiB each way\n");
	if (!check_true("disk-size", chunks && chunks <= sectors / CHUNK_SECTORS,
			"kib= is below 64 or above the disk's size"))
		return 1;

	uint32_t errors = 0;
	for (uint32_t c = 0; c < chunks; c++) {
		fill(c * CHUNK_SECTORS, kib);
		errors += transfer(1, c * CHUNK_SECTORS) != 0;
	}
	check_eq("disk-write", errors, 0);
	check_eq("disk-flush", (uint32_t)flush(), 0);

	uint32_t bad = 0;
	errors = 0;
	for (uint32_t c = 0; c < chunks; c++) {
		for (uint32_t i = 0; i < CHUNK / 4; i++)
			buf[i] = 0;
		errors += transfer(0, c * CHUNK_SECTORS) != 0;
		bad += mismatches(c * CHUNK_SECTORS, kib);
	}
	check_eq("disk-read", errors, 0);
	check_eq("disk-data", bad, 0);
	return check_failures ? 1 : 0;
}
