// check.c - one PASS or FAIL line per named check, and a failure count.
#include "popek.h"

unsigned check_failures;

static void pass(const char *name)
{
	serial_puts("PASS ");
	serial_puts(name);
	serial_putc('\n');
}

static void fail_start(const char *name)
{
	check_failures++;
	serial_puts("FAIL ");
	serial_puts(name);
	serial_puts(": ");
}

int check_eq(const char *name, uint32_t got, uint32_t want)
{
	return check_field(name, "got", got, want);
}

int check_field(const char *name, const char *what, uint32_t got, uint32_t want)
{
	if (got == want) {
		pass(name);
		return 1;
	}
	fail_start(name);
	serial_puts(what);
	serial_putc(' ');
	print_hex32(got);
	serial_puts(" want ");
	print_hex32(want);
	serial_putc('\n');
	return 0;
}

int check_true(const char *name, int ok, const char *why)
{
	if (ok) {
		pass(name);
		return 1;
	}
	fail_start(name);
	serial_puts(why);
	serial_putc('\n');
	return 0;
}
