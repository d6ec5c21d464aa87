/*
 * popek.h - the tiny freestanding library shared by every Popek test ROM.
 *
 * The ROMs run on bare (emulated) hardware: no C library, no OS.  This header
 * declares the few services they need: COM1 output, number formatting, the
 * debug-exit port and Multiboot command-line parsing.
 */
#ifndef POPEK_H
#define POPEK_H

#include <stdint.h>

/* Value a Multiboot v1 loader leaves in EAX to prove it booted us. */
#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002u
/* multiboot_info.flags bit 2: the cmdline field is valid. */
#define MULTIBOOT_INFO_CMDLINE (1u << 2)

/* The leading part of the Multiboot v1 information structure. */
struct multiboot_info {
	uint32_t flags;		/* which of the following fields are valid */
	uint32_t mem_lower;	/* KiB of memory below 1 MiB */
	uint32_t mem_upper;	/* KiB of memory above 1 MiB */
	uint32_t boot_device;	/* BIOS boot device (unused here) */
	uint32_t cmdline;	/* physical address of a NUL-terminated string */
};

/* Every ROM provides main; boot.S passes the loader's EAX and EBX to it and
 * hands its return value to popek_exit. */
int main(uint32_t magic, const struct multiboot_info *mbi);

/* Output over the first serial port (COM1). */
void serial_putc(char c);
void serial_puts(const char *s);
void print_hex32(uint32_t v);	/* "0x" and exactly 8 lower-case digits */
void print_udec(uint32_t v);
void print_dec(int32_t v);

/* Self-checks (check.c): print "PASS name", or "FAIL name: detail" and
 * count the failure in check_failures.  Both return whether it passed. */
extern unsigned check_failures;
int check_eq(const char *name, uint32_t got, uint32_t want);	/* got == want */
/* The same, naming what was compared: "FAIL name: <what> 0x.. want 0x.." */
int check_field(const char *name, const char *what, uint32_t got, uint32_t want);
int check_true(const char *name, int ok, const char *why);	/* why it failed */

/* Ends the run through the debug-exit device with the given status. */
void popek_exit(int status) __attribute__((noreturn));

/* Where serial_putc's bytes and popek_exit's status go instead of COM1 and
 * the debug-exit port, when set: a para-virtualized kernel sends them to
 * the VMM (pv.c). */
extern void (*serial_putc_hook)(char c);
extern void (*popek_exit_hook)(int status);

/* The Multiboot command line, or "" when the loader passed none. */
const char *mb_cmdline(const struct multiboot_info *mbi);
/* What follows "key=" in the first word on the command line that starts
 * with it (up to the next space or the end), or NULL when there is none. */
const char *cmdline_value(const struct multiboot_info *mbi, const char *key);
/* Whether the value v (from cmdline_value) is exactly word. */
int cmdline_value_is(const char *v, const char *word);
/* The decimal number N of the first word on the command line that starts
 * with "key=" (N saturates at ULONG_MAX), or dflt when there is none or
 * its value does not start with a digit. */
unsigned long cmdline_ulong(const struct multiboot_info *mbi, const char *key,
			    unsigned long dflt);

#endif
