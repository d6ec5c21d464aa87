// rom: nanobenchmarks: iters=N (default 1000) of op=syscall|in|callret|pagefault|divzero|ptemod|cr3write|none, or of each
//
// The seven operations of Adams and Agesen's comparison of software and
// hardware virtualization (ASPLOS 2006), each in a tight loop of N:
//
//   syscall    ring 3: INT 0x80 into a kernel handler that counts and IRETs
//   in         ring 0: IN from port 0x80 (the POST port, which no device claims)
//   callret    ring 3: CALL to a RET
//   pagefault  ring 3: a load from a not-present page; the handler checks CR2
//              and the faulting EIP, counts, and resumes after the load
//   divzero    ring 3: DIV by zero; the handler counts and resumes after it
//   ptemod     ring 0: flip the R/W bit of a PTE of the live page tables,
//              then INVLPG the page it maps
//   cr3write   ring 0: MOV to CR3 of the value it already holds
//   none       ring 0: the loop alone (DEC ECX; JNZ), to subtract
//
// The ROM does not time anything itself: `popek bench` times runs of N/10
// and N iterations under each engine from the host, so the guest's set-up
// cancels, and subtracts op=none the same way, so what remains is host
// time per operation.  The guest's RDTSC would not do: under the
// interpreter and the translator it counts instructions, not time, and
// under KVM it is the host's counter, so the engines would not share a
// clock.  Host time is also the question asked: what each technique makes
// the host pay for one guest operation.
//
// What the ROM prints is only how many operations ran and checks that they
// all happened (the handler's count, the PTE's and CR3's final values), the
// same on every engine and under QEMU.
#include "cpu.h"
#include "popek.h"
#include "ring3.h"

#define DEFAULT_ITERS 1000
#define KSTACK_SIZE 4096	// ring 0's stack for traps from ring 3
#define DONE_VECTOR 0x81	// how a ring-3 loop hands back to the kernel
#define PROBE_VA 0x003FF000	// not present: the page fault loop loads from it
#define PTE_VA 0x003FE000	// the page whose PTE the ptemod loop rewrites
#define IN_PORT 0x80		// the POST port (Adams and Agesen's too)

#define STR(x) #x
#define XSTR(x) STR(x)
#define ADDR(p) ((uint32_t)(uintptr_t)(p))

static struct tss32 tss;
static struct gate32 idt[IDT_VECTORS] __attribute__((aligned(8)));
static uint32_t page_dir[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint32_t page_table[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint8_t kernel_stack[KSTACK_SIZE] __attribute__((aligned(16)));
// Only the assembly below names it: `used` keeps gcc from dropping it.
static uint8_t user_stack[PAGE_SIZE] USER_DATA __attribute__((aligned(PAGE_SIZE), used));

// Shared with the assembly below: entries into the handlers, the kernel's
// stack pointer while ring 3 runs, and ring 3's ECX when it handed back.
volatile uint32_t nano_events;
uint32_t nano_kernel_esp, nano_user_ecx;

// The handlers, and the door back from ring 3.  They are as small as a
// kernel's could be, so the table shows what the engine pays for the trap
// itself.  A fault anywhere else than at its loop's site goes on to the
// library's stub, which reports it and ends the run.
__asm__(".pushsection .text\n"
	"nano_syscall_entry:\n\t"
	"incl nano_events\n\t"
	"iret\n"

	"nano_de_entry:\n\t"
	"cmpl $nano_de_site, (%esp)\n\t"
	"jne 1f\n\t"
	"incl nano_events\n\t"
	"movl $nano_de_resume, (%esp)\n\t"
	"iret\n"
	"1:\tjmp trap32_stubs + " XSTR(VEC_DE) " * " XSTR(TRAP_STUB_SIZE) "\n"

	// #PF pushes an error code below the saved EIP.
	"nano_pf_entry:\n\t"
	"push %eax\n\t"
	"mov %cr2, %eax\n\t"
	"cmp $" XSTR(PROBE_VA) ", %eax\n\t"
	"jne 1f\n\t"
	"cmpl $nano_pf_site, 8(%esp)\n\t"
	"jne 1f\n\t"
	"pop %eax\n\t"
	"add $4, %esp\n\t"
	"incl nano_events\n\t"
	"movl $nano_pf_resume, (%esp)\n\t"
	"iret\n"
	"1:\tpop %eax\n\t"
	"jmp trap32_stubs + " XSTR(VEC_PF) " * " XSTR(TRAP_STUB_SIZE) "\n"

	// nano_enter_user(entry, count, arg): runs entry in ring 3 with ECX =
	// count and EBX = arg, returning once it executes INT DONE_VECTOR.
	"nano_enter_user:\n\t"
	"push %ebp\n\t"
	"push %ebx\n\t"
	"push %esi\n\t"
	"push %edi\n\t"
	"mov %esp, nano_kernel_esp\n\t"
	"mov 20(%esp), %edx\n\t"
	"mov 24(%esp), %ecx\n\t"
	"mov 28(%esp), %ebx\n\t"
	"mov $(" XSTR(SEL_UDATA) " | " XSTR(RPL_USER) "), %eax\n\t"
	"mov %eax, %ds\n\t"
	"mov %eax, %es\n\t"
	"mov %eax, %fs\n\t"
	"mov %eax, %gs\n\t"
	"push %eax\n\t"
	"push $user_stack + " XSTR(PAGE_SIZE) "\n\t"
	"push $" XSTR(FL_FIXED) "\n\t"
	"push $(" XSTR(SEL_UCODE32) " | " XSTR(RPL_USER) ")\n\t"
	"push %edx\n\t"
	"iret\n"

	// INT DONE_VECTOR: back to nano_enter_user's caller, on its stack.
	"nano_done_entry:\n\t"
	"mov %ecx, nano_user_ecx\n\t"
	"mov $" XSTR(SEL_KDATA) ", %eax\n\t"
	"mov %eax, %ds\n\t"
	"mov %eax, %es\n\t"
	"mov %eax, %fs\n\t"
	"mov %eax, %gs\n\t"
	"mov nano_kernel_esp, %esp\n\t"
	"pop %edi\n\t"
	"pop %esi\n\t"
	"pop %ebx\n\t"
	"pop %ebp\n\t"
	"ret\n"
	".popsection\n");

// The ring-3 loops: ECX counts down, EBX is nano_enter_user's arg.
#define USER_LOOP_END "2:\tint $" XSTR(DONE_VECTOR) "\n"
__asm__(".pushsection .user.text, \"ax\"\n"
	"nano_user_syscall:\n\t"
	"test %ecx, %ecx\n\t"
	"jz 2f\n"
	"1:\tint $" XSTR(SYSCALL_VECTOR) "\n\t"
	"dec %ecx\n\t"
	"jnz 1b\n"
	USER_LOOP_END

	"nano_user_callret:\n\t"
	"test %ecx, %ecx\n\t"
	"jz 2f\n"
	"1:\tcall 3f\n\t"
	"dec %ecx\n\t"
	"jnz 1b\n"
	USER_LOOP_END
	"3:\tret\n"

	"nano_user_pagefault:\n\t"
	"test %ecx, %ecx\n\t"
	"jz 2f\n"
	"nano_pf_site:\n\t"
	"mov (%ebx), %eax\n"
	"nano_pf_resume:\n\t"
	"dec %ecx\n\t"
	"jnz nano_pf_site\n"
	USER_LOOP_END

	"nano_user_divzero:\n\t"
	"xor %esi, %esi\n\t"
	"test %ecx, %ecx\n\t"
	"jz 2f\n"
	"nano_de_site:\n\t"
	"div %esi\n"
	"nano_de_resume:\n\t"
	"dec %ecx\n\t"
	"jnz nano_de_site\n"
	USER_LOOP_END
	".popsection\n");

void nano_syscall_entry(void), nano_de_entry(void), nano_pf_entry(void);
void nano_done_entry(void);
void nano_enter_user(void (*entry)(void), uint32_t count, uint32_t arg);
void nano_user_syscall(void), nano_user_callret(void), nano_user_pagefault(void);
void nano_user_divzero(void);

// Ring 0 loops.  Each returns what is left of the count: 0.
static uint32_t loop_none(uint32_t n)
{
	__asm__ volatile("test %0, %0\n\t"
			 "jz 2f\n"
			 "1:\tdec %0\n\t"
			 "jnz 1b\n"
			 "2:"
			 : "+c"(n)
			 :
			 : "cc");
	return n;
}

static uint32_t loop_in(uint32_t n)
{
	__asm__ volatile("test %0, %0\n\t"
			 "jz 2f\n"
			 "1:\tinb $" XSTR(IN_PORT) ", %%al\n\t"
			 "dec %0\n\t"
			 "jnz 1b\n"
			 "2:"
			 : "+c"(n)
			 :
			 : "eax", "cc");
	return n;
}

static uint32_t loop_ptemod(uint32_t n)
{
	__asm__ volatile("test %0, %0\n\t"
			 "jz 2f\n"
			 "1:\txorl $" XSTR(PTE_RW) ", (%1)\n\t"
			 "invlpg (%2)\n\t"
			 "dec %0\n\t"
			 "jnz 1b\n"
			 "2:"
			 : "+c"(n)
			 : "r"(paging32_pte(page_dir, PTE_VA)), "r"(PTE_VA)
			 : "memory", "cc");
	return n;
}

static uint32_t loop_cr3write(uint32_t n)
{
	__asm__ volatile("test %0, %0\n\t"
			 "jz 2f\n"
			 "1:\tmov %1, %%cr3\n\t"
			 "dec %0\n\t"
			 "jnz 1b\n"
			 "2:"
			 : "+c"(n)
			 : "r"(read_cr3())
			 : "memory", "cc");
	return n;
}

static void check_count(const char *name, uint32_t left)
{
	check_eq(name, left, 0);
}

static void run_user(void (*entry)(void), uint32_t n, uint32_t arg, const char *count,
		     const char *events)
{
	nano_events = 0;
	nano_enter_user(entry, n, arg);
	check_count(count, nano_user_ecx);
	if (events)
		check_eq(events, nano_events, n);
}

static void op_syscall(uint32_t n)
{
	run_user(nano_user_syscall, n, 0, "nano-syscall-count", "nano-syscall-handled");
}

static void op_in(uint32_t n)
{
	check_count("nano-in-count", loop_in(n));
}

static void op_callret(uint32_t n)
{
	run_user(nano_user_callret, n, 0, "nano-callret-count", 0);
}

static void op_pagefault(uint32_t n)
{
	run_user(nano_user_pagefault, n, PROBE_VA, "nano-pagefault-count",
		 "nano-pagefault-handled");
}

static void op_divzero(uint32_t n)
{
	run_user(nano_user_divzero, n, 0, "nano-divzero-count", "nano-divzero-handled");
}

static void op_ptemod(uint32_t n)
{
	uint32_t before = *paging32_pte(page_dir, PTE_VA);

	check_count("nano-ptemod-count", loop_ptemod(n));
	// Each pass flips R/W: an odd count leaves it flipped.
	check_eq("nano-ptemod-pte", *paging32_pte(page_dir, PTE_VA),
		 before ^ (n % 2 ? PTE_RW : 0));
}

static void op_cr3write(uint32_t n)
{
	check_count("nano-cr3write-count", loop_cr3write(n));
	check_eq("nano-cr3write-cr3", read_cr3(), ADDR(page_dir));
}

static void op_none(uint32_t n)
{
	check_count("nano-none-count", loop_none(n));
}

static const struct op {
	const char *name;
	void (*run)(uint32_t n);
} ops[] = {
	{ "syscall", op_syscall },   { "in", op_in },
	{ "callret", op_callret },   { "pagefault", op_pagefault },
	{ "divzero", op_divzero },   { "ptemod", op_ptemod },
	{ "cr3write", op_cr3write }, { "none", op_none },
};
#define NOPS (sizeof ops / sizeof ops[0])

static void setup(void)
{
	tss.ss0 = SEL_KDATA;
	tss.esp0 = ADDR(kernel_stack + KSTACK_SIZE);
	tss.iomap_base = sizeof tss;	// no I/O bitmap: ring 3 has no ports
	gdt_init(&tss, sizeof tss);
	ltr(SEL_TSS);

	trap32_install(idt);
	idt32_set(idt, SYSCALL_VECTOR, ADDR(nano_syscall_entry), SEL_KCODE32, GATE_TRAP,
		  DPL_USER);
	idt32_set(idt, DONE_VECTOR, ADDR(nano_done_entry), SEL_KCODE32, GATE_INT, DPL_USER);
	idt32_set(idt, VEC_DE, ADDR(nano_de_entry), SEL_KCODE32, GATE_INT, DPL_KERNEL);
	idt32_set(idt, VEC_PF, ADDR(nano_pf_entry), SEL_KCODE32, GATE_INT, DPL_KERNEL);

	// The low 4 MiB one to one, the kernel's pages supervisor-only, page 0
	// and the probe page absent.
	paging32_identity(page_dir, page_table, PTE_P | PTE_RW);
	paging32_update(page_dir, 0, PAGE_SIZE, 0, PTE_P);
	paging32_update(page_dir, PROBE_VA, PROBE_VA + PAGE_SIZE, 0, PTE_P);
	paging32_update(page_dir, ADDR(__user_start), ADDR(__user_end), PTE_US, 0);
	paging32_enable(page_dir);
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	// The command line is read before paging hides any low page it may be in.
	uint32_t n = (uint32_t)cmdline_ulong(mbi, "iters", DEFAULT_ITERS);
	const char *which = cmdline_value(mbi, "op");
	int selected[NOPS], any = 0;

	(void)magic;
	for (unsigned i = 0; i < NOPS; i++)
		any |= selected[i] = !which || cmdline_value_is(which, ops[i].name);
	if (!any) {
		check_true("nano-op", 0, "no such op (see the ROM's summary)");
		return 1;
	}
	setup();
	for (unsigned i = 0; i < NOPS; i++) {
		if (!selected[i])
			continue;
		serial_puts("nano: ");
		serial_puts(ops[i].name);
		serial_puts(" x ");
		print_udec(n);
		serial_putc('\n');
		ops[i].run(n);
	}
	return check_failures ? 1 : 0;
}
