/*
 * ata.h - a PIO driver for the primary IDE channel's master disk (lib/ata.c).
 *
 * Polled, 28-bit LBA, interrupts left to the PIC: every 16-bit word goes
 * through the data port, one I/O instruction (and so one VM exit) each.
 */
#ifndef POPEK_ATA_H
#define POPEK_ATA_H

#include <stdint.h>

#define ATA_SECTOR 512u
/* Sectors per DRQ block the driver asks READ/WRITE MULTIPLE for. */
#define ATA_MULTIPLE 16u

/* Whether a drive answers on the primary channel: IDENTIFY DEVICE into
 * id (256 words).  Returns 0 on success, -1 when there is no drive. */
int ata_identify(uint16_t id[256]);
/* Copies an IDENTIFY string (words first..first+n-1) into out as text,
 * trailing spaces dropped; out holds 2n + 1 bytes. */
void ata_id_string(const uint16_t id[256], unsigned first, unsigned n, char *out);
/* SET MULTIPLE MODE to ATA_MULTIPLE: 0, or -1 if the drive refused. */
int ata_set_multiple(void);
/* READ/WRITE MULTIPLE of count (1..256) sectors at lba: 0 or -1 on ERR. */
int ata_read(uint32_t lba, unsigned count, void *buf);
int ata_write(uint32_t lba, unsigned count, const void *buf);
/* FLUSH CACHE: 0 or -1. */
int ata_flush(void);

#endif
