// rom: where x86 is not classically virtualizable: CLI/POPF, SGDT, SIDT, SMSW, PUSH CS and MOV from SS checked against what the kernel set
//
// Each check runs an instruction that reads or changes privileged state and
// compares the result with what this ring-0 kernel knows it should be. On
// real hardware, under QEMU, KVM or a VMM that rewrites these instructions
// (full virtualization) every line says PASS. Under trap-and-emulate alone
// (`--engine bt --virt trap`) the kernel runs deprivileged at ring 1 and
// none of these instructions traps, so each shows the real CPU's state, not
// the kernel's: Popek and Goldberg's sensitive-but-unprivileged
// instructions. The ROM loads its own GDT and IDT but never reloads a
// segment register nor takes an interrupt, so the tables need no entries.
#include "popek.h"
#include "x86.h"

/* The flags register's interrupt-enable bit. */
#define EFLAGS_IF (1u << 9)
/* The 8259 PICs' data ports: writing 0xFF masks every line. */
#define PIC1_DATA 0x21
#define PIC2_DATA 0xA1

struct __attribute__((packed)) dtr {
	uint16_t limit;
	uint32_t base;
};

/* What LGDT and LIDT load: addresses and limits only this kernel knows. */
static uint64_t table[32] __attribute__((aligned(8)));

static uint32_t eflags(void)
{
	uint32_t f;
	__asm__ volatile("pushf; pop %0" : "=r"(f));
	return f;
}

static void set_eflags(uint32_t f)
{
	__asm__ volatile("push %0; popf" : : "r"(f) : "cc");
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;
	// No interrupt may come while IF is set below.
	outb(PIC1_DATA, 0xFF);
	outb(PIC2_DATA, 0xFF);

	__asm__ volatile("cli");
	check_eq("popf.cli-then-pushf-shows-if-clear", eflags() & EFLAGS_IF, 0);
	__asm__ volatile("sti");
	set_eflags(eflags() & ~EFLAGS_IF);
	check_eq("popf.popf-clears-if", eflags() & EFLAGS_IF, 0);
	__asm__ volatile("cli");

	struct dtr old, mine = { sizeof(table) - 1, (uint32_t)table }, got;
	__asm__ volatile("sgdt %0" : "=m"(old));
	__asm__ volatile("lgdt %0" : : "m"(mine));
	__asm__ volatile("sgdt %0" : "=m"(got));
	check_field("popf.sgdt-shows-the-loaded-gdt", "base", got.base, mine.base);
	check_field("popf.sgdt-shows-the-loaded-limit", "limit", got.limit, mine.limit);
	__asm__ volatile("lgdt %0" : : "m"(old));

	mine.limit = 8 * 16 - 1;
	__asm__ volatile("sidt %0" : "=m"(old));
	__asm__ volatile("lidt %0" : : "m"(mine));
	__asm__ volatile("sidt %0" : "=m"(got));
	check_field("popf.sidt-shows-the-loaded-idt", "base", got.base, mine.base);
	__asm__ volatile("lidt %0" : : "m"(old));

	uint32_t cr0, msw;
	__asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
	__asm__ volatile("smsw %0" : "=r"(msw));
	check_eq("popf.smsw-matches-cr0", msw & 0xFFFF, cr0 & 0xFFFF);

	uint32_t cs, ss;
	__asm__ volatile("push %%cs; pop %0" : "=r"(cs));
	check_field("popf.push-cs-shows-ring-0", "rpl", cs & 3, 0);
	__asm__ volatile("mov %%ss, %0" : "=r"(ss));
	check_field("popf.mov-from-ss-shows-ring-0", "rpl", ss & 3, 0);
	return check_failures ? 1 : 0;
}
