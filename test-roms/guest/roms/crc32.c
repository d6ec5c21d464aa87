// rom: rounds=N (default 1) table-driven CRC-32s of a 64 KiB buffer, then prints the last (a compute benchmark)
//
// A load, a table lookup, shifts and XORs per byte: memory-bound integer
// code, as in every checksum and hash.
#include "popek.h"

#define DEFAULT_ROUNDS 1ul
#define SIZE 65536u
/* The reflected IEEE 802.3 polynomial. */
#define POLY 0xEDB88320u

static uint8_t buffer[SIZE];
static uint32_t table[256];

static __attribute__((noinline)) uint32_t crc32(const uint8_t *p, uint32_t n)
{
	uint32_t crc = 0xFFFFFFFFu;
	while (n--)
		crc = table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
	return ~crc;
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	unsigned long rounds = cmdline_ulong(mbi, "rounds", DEFAULT_ROUNDS);
	uint32_t crc = 0;

	(void)magic;
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
		table[i] = c;
	}
	for (uint32_t i = 0; i < SIZE; i++)
		buffer[i] = (uint8_t)(i * 7 + (i >> 8));
	for (unsigned long r = 0; r < rounds; r++) {
		buffer[r % SIZE] ^= (uint8_t)r;
		crc = crc32(buffer, SIZE);
	}
	serial_puts("crc32: ");
	print_udec(rounds);
	serial_puts(" rounds, last ");
	print_hex32(crc);
	serial_putc('\n');
	return 0;
}
