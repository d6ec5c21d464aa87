// rom: rounds=N (default 1) sieves of Eratosthenes over 64 KiB of flags, then prints the primes found (a compute benchmark)
//
// Byte stores and loads with a stride, a tight inner loop and a call per
// round: the kind of integer code a translator should run near native speed.
#include "popek.h"

#define DEFAULT_ROUNDS 1ul
#define LIMIT 65536u

static uint8_t composite[LIMIT];

static __attribute__((noinline)) uint32_t sieve(void)
{
	uint32_t count = 0;
	for (uint32_t i = 0; i < LIMIT; i++)
		composite[i] = 0;
	for (uint32_t i = 2; i < LIMIT; i++) {
		if (composite[i])
			continue;
		count++;
		for (uint32_t j = i * 2; j < LIMIT; j += i)
			composite[j] = 1;
	}
	return count;
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	unsigned long rounds = cmdline_ulong(mbi, "rounds", DEFAULT_ROUNDS);
	uint32_t count = 0;

	(void)magic;
	for (unsigned long r = 0; r < rounds; r++)
		count = sieve();
	serial_puts("sieve: ");
	print_udec(rounds);
	serial_puts(" rounds, ");
	print_udec(count);
	serial_puts(" primes below 65536\n");
	return count == 6542 || rounds == 0 ? 0 : 1;
}
