// ata.c - polled PIO driver for the primary channel's master disk.
#include "ata.h"
#include "x86.h"

#define ATA_DATA 0x1F0
#define ATA_ERROR 0x1F1
#define ATA_COUNT 0x1F2
#define ATA_LBA_LOW 0x1F3
#define ATA_LBA_MID 0x1F4
#define ATA_LBA_HIGH 0x1F5
#define ATA_DEVICE 0x1F6
#define ATA_STATUS 0x1F7	/* read: status; write: command */
#define ATA_ALT_STATUS 0x3F6

#define ST_BSY 0x80
#define ST_DRDY 0x40
#define ST_DRQ 0x08
#define ST_ERR 0x01

#define DEV_LBA 0xE0		/* LBA mode, device 0 (bits 7 and 5 set, as of old) */

#define CMD_READ_MULTIPLE 0xC4
#define CMD_WRITE_MULTIPLE 0xC5
#define CMD_SET_MULTIPLE 0xC6
#define CMD_FLUSH_CACHE 0xE7
#define CMD_IDENTIFY 0xEC

/* Polls bounded so a missing or wedged drive cannot hang the ROM. */
#define MAX_POLLS 1000000u

// Waits for BSY to clear and then for `want` (or ERR): the status, or 0xFF
// when the drive never got there.
static uint8_t wait_status(uint8_t want)
{
	for (unsigned i = 0; i < MAX_POLLS; i++) {
		uint8_t s = inb(ATA_STATUS);
		if (s == 0xFF)
			return s;	// nothing on the bus
		if (!(s & ST_BSY) && (s & (want | ST_ERR)))
			return s;
	}
	return 0xFF;
}

static void select_lba(uint32_t lba, unsigned count)
{
	outb(ATA_DEVICE, DEV_LBA | ((lba >> 24) & 0x0F));
	outb(ATA_COUNT, (uint8_t)count);	// 256 is written as 0
	outb(ATA_LBA_LOW, (uint8_t)lba);
	outb(ATA_LBA_MID, (uint8_t)(lba >> 8));
	outb(ATA_LBA_HIGH, (uint8_t)(lba >> 16));
}

int ata_identify(uint16_t id[256])
{
	outb(ATA_DEVICE, DEV_LBA);
	if (inb(ATA_STATUS) == 0xFF)
		return -1;
	outb(ATA_STATUS, CMD_IDENTIFY);
	uint8_t s = wait_status(ST_DRQ);
	if (s == 0xFF || (s & ST_ERR))
		return -1;
	for (unsigned i = 0; i < 256; i++)
		id[i] = inw(ATA_DATA);
	return 0;
}

void ata_id_string(const uint16_t id[256], unsigned first, unsigned n, char *out)
{
	unsigned len = 0;

	for (unsigned i = 0; i < n; i++) {
		out[len++] = (char)(id[first + i] >> 8);
		out[len++] = (char)id[first + i];
	}
	while (len && out[len - 1] == ' ')
		len--;
	out[len] = 0;
}

int ata_set_multiple(void)
{
	outb(ATA_DEVICE, DEV_LBA);
	outb(ATA_COUNT, ATA_MULTIPLE);
	outb(ATA_STATUS, CMD_SET_MULTIPLE);
	uint8_t s = wait_status(ST_DRDY);
	return (s == 0xFF || (s & ST_ERR)) ? -1 : 0;
}

// Moves count sectors in blocks of ATA_MULTIPLE, waiting for DRQ before
// each block as the protocol asks.
static int transfer(uint8_t command, uint32_t lba, unsigned count, uint16_t *words, int write)
{
	select_lba(lba, count);
	outb(ATA_STATUS, command);
	while (count) {
		unsigned n = count < ATA_MULTIPLE ? count : ATA_MULTIPLE;
		uint8_t s = wait_status(ST_DRQ);
		if (s == 0xFF || (s & ST_ERR) || !(s & ST_DRQ))
			return -1;
		for (unsigned i = 0; i < n * ATA_SECTOR / 2; i++) {
			if (write)
				outw(ATA_DATA, *words++);
			else
				*words++ = inw(ATA_DATA);
		}
		count -= n;
	}
	// After the last block the drive drops DRQ (and, for a write, has
	// stored the data): the alternate status says so without an ack.
	uint8_t s = inb(ATA_ALT_STATUS);
	return (s & (ST_ERR | ST_DRQ)) ? -1 : 0;
}

int ata_read(uint32_t lba, unsigned count, void *buf)
{
	return transfer(CMD_READ_MULTIPLE, lba, count, buf, 0);
}

int ata_write(uint32_t lba, unsigned count, const void *buf)
{
	return transfer(CMD_WRITE_MULTIPLE, lba, count, (uint16_t *)buf, 1);
}

int ata_flush(void)
{
	outb(ATA_DEVICE, DEV_LBA);
	outb(ATA_STATUS, CMD_FLUSH_CACHE);
	uint8_t s = wait_status(ST_DRDY);
	return (s == 0xFF || (s & ST_ERR)) ? -1 : 0;
}
