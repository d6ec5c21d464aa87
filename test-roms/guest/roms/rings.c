// rom: a ring-3 task under paging: INT 0x80, SYSENTER, #PF/#GP/#UD/#DE
//
// A miniature protected-mode kernel.  It builds its own GDT (ring-0 and
// ring-3 code and data, and a TSS whose ESP0/SS0 give ring 0 a stack when
// ring 3 is interrupted), an IDT that sends every vector to one handler
// plus a DPL-3 gate for INT 0x80, the SYSENTER MSRs, and 32-bit paging:
// the low 4 MiB identity-mapped, kernel pages supervisor-only, the task's
// pages user-accessible and one of them read-only.  Then it IRETs into the
// ring-3 task (the USER_TEXT functions at the end), which makes system
// calls and faults on purpose.
//
// The kernel prints every check, the task's through SYS_CHECK.  A fault the
// task provokes is announced first with SYS_EXPECT, naming the vector,
// error code and so on it should produce; the kernel compares, prints the
// check and resumes after the faulting instruction.  The exception is the
// write to the read-only page, which the kernel repairs and retries, as
// an OS does for copy-on-write.
//
// rings-pv.c builds this file with RINGS_PV defined: the para-virtualized
// port, whose kernel asks the VMM (popek_pv.h) where this one runs
// privileged instructions.  Every difference is in an #ifdef RINGS_PV.
#include "cpu.h"
#include "popek.h"
#include "ring3.h"
#ifdef RINGS_PV
#include "popek_pv.h"
#endif

#define KSTACK_SIZE 4096	// ring 0's stack for traps from ring 3
#define ALIAS_VA 0x003FF000	// the last page below 4 MiB, remapped
#define ALIAS_VALUE 0xA11A5ED0	// written through one mapping, read through the other
#define RO_PROBE 0x123		// offset of the byte written in the read-only page
#define RO_VALUE 0x5A
#define DIVIDE_ERROR_DIVISOR 0

// A pointer as the 32-bit number the hardware sees (a macro, not a
// function, so ring-3 code can use it too).
#define ADDR(p) ((uint32_t)(uintptr_t)(p))

// A fault the next instruction is expected to raise.  The code at the
// fault site loads ESI with the faulting instruction's address and EDI
// with the address to resume at (see FAULTING), so the kernel checks that
// the saved EIP points at the instruction, as faults must.
struct fault_expect {
	const char *name;	// the check to print
	uint32_t vector;
	uint32_t error;		// the error code (0 where the CPU pushes none)
	uint32_t cr2;		// the faulting address, for #PF
	uint32_t rpl;		// privilege level of the code that faulted
};

// Runs the asm text setup, then the instruction insn, which must fault
// (see struct fault_expect); operands are named in the inputs after them.
// Were insn not to fault, it could only change the clobbered registers.
#define FAULTING(setup, insn, ...)                                            \
	__asm__ volatile("mov $1f, %%esi\n\t"                                 \
			 "mov $2f, %%edi\n\t"                                 \
			 setup "\n"                                           \
			 "1:\t" insn "\n"                                     \
			 "2:"                                                 \
			 :                                                    \
			 : __VA_ARGS__                                        \
			 : "eax", "ecx", "edx", "esi", "edi", "memory", "cc")

// ---- Kernel state (supervisor pages) ----
static struct tss32 tss;
#ifndef RINGS_PV
static struct gate32 idt[IDT_VECTORS] __attribute__((aligned(8)));
#endif
static uint32_t page_dir[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint32_t page_table[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint8_t kernel_stack[KSTACK_SIZE] __attribute__((aligned(16)));
#define KSTACK_TOP ADDR(kernel_stack + KSTACK_SIZE)
// A kernel page ALIAS_VA maps too, and that the task tries to read.
static volatile uint32_t kernel_page[PAGE_SIZE / sizeof(uint32_t)]
	__attribute__((aligned(PAGE_SIZE)));

static const struct fault_expect *armed;	// the fault announced, if any
static struct fault_expect user_expect;		// the task's announcement
static int ro_page_fixed, seen_int80, seen_sysenter;

// ---- Ring-3 memory (link.ld maps the .user section's pages U/S=1) ----
static uint8_t user_stack[PAGE_SIZE] USER_DATA __attribute__((aligned(PAGE_SIZE)));
static volatile uint8_t user_ro_page[PAGE_SIZE] USER_DATA
	__attribute__((aligned(PAGE_SIZE)));
static void user_main(void) USER_TEXT __attribute__((noreturn));

#ifdef RINGS_PV
#define PV_BATCH 32		// room for the page-table updates of one batch
#define TIMER_NS 1000000	// the one-shot timer the kernel waits for: 1 ms

// A hypercall that should succeed: silent if it does, so that the output
// is the native kernel's.
static void pv_check(const char *name, int32_t ret)
{
	if (ret)
		check_field(name, "error", (uint32_t)ret, 0);
}

// Queues "the PTE of va becomes val" (replacing an earlier update of the
// same entry in the batch).
static void pte_set(struct pv_mmu_update *b, unsigned *n, uint32_t va, uint32_t val)
{
	uint32_t ptr = ADDR(paging32_pte(page_dir, va));
	unsigned i = 0;

	while (i < *n && b[i].ptr != ptr)
		i++;
	if (i == PV_BATCH) {
		check_true("pv-batch-size", 0, "too many page-table updates for one batch");
		return;
	}
	if (i == *n)
		b[(*n)++].ptr = ptr;
	b[i].val = val;
}

// Queues paging32_update's change: the PTEs of [start, end) get the bits
// set and lose the bits clear, starting from what the batch already says.
static void pte_queue(struct pv_mmu_update *b, unsigned *n, uint32_t start,
		      uint32_t end, uint32_t set, uint32_t clear)
{
	for (uint32_t va = start & PAGE_MASK; va < end; va += PAGE_SIZE) {
		uint32_t ptr = ADDR(paging32_pte(page_dir, va)), cur = *paging32_pte(page_dir, va);

		for (unsigned i = 0; i < *n; i++)
			if (b[i].ptr == ptr)
				cur = (uint32_t)b[i].val;
		pte_set(b, n, va, (cur & ~clear) | set);
	}
}

// The trap table replaces the IDT: the VMM checks it and builds the IDT.
// Exceptions go to trap32's stubs; INT 0x80 is open to ring 3.
static void install_trap_table(void)
{
	static struct pv_trap_info table[VEC_FIRST_IRQ + 1];
	unsigned n = 0;

	for (uint32_t v = 0; v < VEC_FIRST_IRQ; v++)
		table[n++] = (struct pv_trap_info){ (uint8_t)v, PV_TRAP_DPL(DPL_KERNEL),
						    SEL_KCODE32, TRAP32_STUB(v) };
	table[n++] = (struct pv_trap_info){ SYSCALL_VECTOR,
					    PV_TRAP_DPL(DPL_USER) | PV_TRAP_KEEP_IF,
					    SEL_KCODE32, TRAP32_STUB(SYSCALL_VECTOR) };
	pv_check("pv-trap-table", pv_call(HC_SET_TRAP_TABLE, ADDR(table), n));
}

static volatile unsigned timer_events;

static void on_event(uint32_t pending)
{
	if (pending & PV_EVENT_TIMER)
		timer_events++;
}

// Events instead of interrupts: arm the one-shot timer, block until its
// event arrives through the callback, then mask events again.
static void wait_for_timer(void)
{
	pv_check("pv-callback", pv_set_event_handler(on_event));
	pv_check("pv-timer", pv_call(HC_SET_TIMER, TIMER_NS, 0));
	while (!timer_events) {
		int32_t ret = pv_call(HC_SCHED_OP, SCHED_BLOCK, 0);

		if (ret) {
			pv_check("pv-block", ret);
			break;
		}
	}
	pv_events_mask();
}
#endif

static int in_user_pages(uint32_t p)
{
	return p >= ADDR(__user_start) && p < ADDR(__user_end);
}

// The task's NUL-terminated string at p, or NULL if it strays outside the
// task's pages: a kernel must not let ring 3 make it read its memory.
static const char *user_string(uint32_t p)
{
	for (uint32_t q = p; in_user_pages(q); q++)
		if (!*(const char *)(uintptr_t)q)
			return (const char *)(uintptr_t)p;
	return 0;
}

// An announced fault arrived: compare it, print the check and resume.
static void expected_fault(struct trap_frame *f, const struct fault_expect *e)
{
	const struct {
		const char *what;
		uint32_t got, want;
	} fields[] = {
		{ "vector", f->vector, e->vector },
		{ "error code", f->error, e->error },
		{ "cr2", f->vector == VEC_PF ? read_cr2() : 0, e->cr2 },
		{ "cs rpl", f->cs & SEL_RPL_MASK, e->rpl },
	};
	unsigned i = 0;

	while (i < sizeof fields / sizeof fields[0] && fields[i].got == fields[i].want)
		i++;
	if (i == sizeof fields / sizeof fields[0])
		check_true(e->name, 1, 0);
	else
		check_field(e->name, fields[i].what, fields[i].got, fields[i].want);
	armed = 0;
	f->eip = f->edi;
}

// The task wrote its read-only page: check the fault, make the page
// writable and return to the same instruction, which now succeeds.
static void fix_ro_page(struct trap_frame *f)
{
	if (ro_page_fixed) {
		// Returning again would loop forever.
		check_true("pagefault-retry", 0, "the write faulted again after the fix-up");
		popek_exit(1);
	}
	check_eq("pagefault-cr2", read_cr2(), ADDR(&user_ro_page[RO_PROBE]));
	check_eq("pagefault-errcode", f->error, PF_ERR_P | PF_ERR_W | PF_ERR_U);
#ifdef RINGS_PV
	// One validated update; the VMM flushes the stale translation.
	struct pv_mmu_update u[1];
	unsigned n = 0;

	pte_queue(u, &n, ADDR(user_ro_page), ADDR(user_ro_page) + PAGE_SIZE, PTE_RW, 0);
	pv_check("pv-ro-page-update", pv_call(HC_MMU_UPDATE, ADDR(u), n));
#else
	paging32_update(page_dir, ADDR(user_ro_page), ADDR(user_ro_page) + PAGE_SIZE,
			PTE_RW, 0);
	// The CPU may still hold the read-only translation.
	invlpg(user_ro_page);
#endif
	ro_page_fixed = 1;
}

// Checks, once per entry path, that the kernel was entered the way it
// should be.  Both paths push the frame at the top of kernel_stack: INT
// because TSS.ESP0 says so, SYSENTER because MSR_SYSENTER_ESP does.
static void check_entry(struct trap_frame *f)
{
	if (f->vector == SYSCALL_VECTOR && !seen_int80) {
		seen_int80 = 1;
		check_true("int80-from-ring3",
			   (f->cs & SEL_MASK) == (SEL_UCODE32 | RPL_USER) &&
			   (f->user_ss & SEL_MASK) == (SEL_UDATA | RPL_USER),
			   "the saved CS:SS are not the task's ring-3 selectors");
		check_eq("tss-esp0", ADDR(f + 1), KSTACK_TOP);
	}
	if (f->vector == TRAP_SYSENTER && !seen_sysenter) {
		seen_sysenter = 1;
		check_true("sysenter",
			   read_cs() == SEL_KCODE32 && read_ss() == SEL_KDATA &&
			   ADDR(f + 1) == KSTACK_TOP && !(f->eflags & FL_IF),
			   "not on the SYSENTER MSRs' CS, SS and ESP");
	}
}

static void syscall(struct trap_frame *f)
{
	const char *s;

	check_entry(f);
	if (armed) {
		check_true(armed->name, 0, "the instruction did not fault");
		armed = 0;
	}
	switch (f->eax) {
	case SYS_WRITE:
		if (!(s = user_string(f->ebx)))
			break;
		serial_puts(s);
		for (f->eax = 0; s[f->eax]; f->eax++)
			;
		return;
	case SYS_CHECK:
		if (!(s = user_string(f->ebx)))
			break;
		f->eax = (uint32_t)check_eq(s, f->esi, f->edi);
		return;
	case SYS_GETCS:
		f->eax = f->cs & SEL_MASK;
		return;
	case SYS_EXPECT:
		if (!in_user_pages(f->ebx) ||
		    !in_user_pages(f->ebx + sizeof user_expect - 1))
			break;
		user_expect = *(const struct fault_expect *)(uintptr_t)f->ebx;
		if (!user_string(ADDR(user_expect.name)))
			break;
		armed = &user_expect;
		f->eax = 0;
		return;
	case SYS_EXIT:
		popek_exit(check_failures || f->ebx ? 1 : 0);
	}
	check_field("syscall", "bad call", f->eax, 0);
	f->eax = SYS_ERROR;
}

static void kernel_trap(struct trap_frame *f)
{
#ifdef RINGS_PV
	// The virtual CLI: no event callback while the kernel handles a trap.
	pv_events_mask();
#endif
	if (f->vector == SYSCALL_VECTOR || f->vector == TRAP_SYSENTER)
		syscall(f);
	else if (armed && f->eip == f->esi)
		// Faults report the instruction that faulted, not the next: one
		// anywhere else is not the announced one.
		expected_fault(f, armed);
	else if (f->vector == VEC_PF && (f->cs & SEL_RPL_MASK) == RPL_USER &&
		 (read_cr2() & PAGE_MASK) == ADDR(user_ro_page))
		fix_ro_page(f);
	else
		trap32_unexpected(f);
#ifdef RINGS_PV
	pv_events_unmask();
#endif
}

static void setup_paging(void)
{
	paging32_identity(page_dir, page_table, PTE_P | PTE_RW);
#ifdef RINGS_PV
	// The tables are not live yet, so plain writes built them.  The VMM
	// checks them and turns paging on; later changes are validated batches.
	struct pv_mmu_update batch[PV_BATCH];
	unsigned n = 0;

	pv_check("pv-mmu-base", pv_call(HC_MMU_BASE, ADDR(page_dir), 0));
	pte_queue(batch, &n, 0, PAGE_SIZE, 0, PTE_P);
	pte_queue(batch, &n, ADDR(__user_start), ADDR(__user_end), PTE_US, 0);
	pte_queue(batch, &n, ADDR(user_ro_page), ADDR(user_ro_page) + PAGE_SIZE, 0, PTE_RW);
	pte_set(batch, &n, ALIAS_VA, ADDR(kernel_page) | PTE_P | PTE_RW);
	pv_check("pv-mmu-batch", pv_call(HC_MMU_UPDATE, ADDR(batch), n));
#else
	// Page 0 stays absent, so null pointers fault.
	paging32_update(page_dir, 0, PAGE_SIZE, 0, PTE_P);
	paging32_update(page_dir, ADDR(__user_start), ADDR(__user_end), PTE_US, 0);
	paging32_update(page_dir, ADDR(user_ro_page), ADDR(user_ro_page) + PAGE_SIZE,
			0, PTE_RW);
	*paging32_pte(page_dir, ALIAS_VA) = ADDR(kernel_page) | PTE_P | PTE_RW;
	paging32_enable(page_dir);
#endif
	check_eq("paging-enabled", read_cr0() & (CR0_PE | CR0_PG | CR0_WP),
		 CR0_PE | CR0_PG | CR0_WP);

	// With translation on, two virtual pages reach one physical page.
	volatile uint32_t *alias = (volatile uint32_t *)ALIAS_VA;

	kernel_page[0] = ALIAS_VALUE;
	alias[1] = ~ALIAS_VALUE;
	check_true("paging-alias", alias[0] == ALIAS_VALUE && kernel_page[1] == ~ALIAS_VALUE,
		   "the alias page does not show the kernel page");
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;
#ifdef RINGS_PV
	if (pv_init()) {
		check_true("pv-init", 0, "Popek's hypercall interface is not there");
		popek_exit(1);
	}
#endif
	tss.ss0 = SEL_KDATA;
	tss.esp0 = KSTACK_TOP;
	// An I/O bitmap offset at the TSS limit means no bitmap: with IOPL 0,
	// every port is closed to ring 3.
	tss.iomap_base = sizeof tss;
	gdt_init(&tss, sizeof tss);
	ltr(SEL_TSS);

#ifdef RINGS_PV
	install_trap_table();
#else
	trap32_install(idt);
	idt32_set(idt, SYSCALL_VECTOR, TRAP32_STUB(SYSCALL_VECTOR), SEL_KCODE32,
		  GATE_TRAP, DPL_USER);
#endif
	trap32_handler = kernel_trap;
	wrmsr(MSR_SYSENTER_CS, SEL_KCODE32);
	wrmsr(MSR_SYSENTER_ESP, KSTACK_TOP);
	wrmsr(MSR_SYSENTER_EIP, ADDR(sysenter_entry));

	setup_paging();
#ifdef RINGS_PV
	wait_for_timer();
#endif

	// CR0.WP: ring 0 may not write read-only pages either.
	static const struct fault_expect wp = {
		"wp-kernel-write", VEC_PF, PF_ERR_P | PF_ERR_W,
		ADDR(&user_ro_page[RO_PROBE]), RPL_KERNEL
	};
	armed = &wp;
	FAULTING("", "movb %[v], (%[p])", [p] "r"(&user_ro_page[RO_PROBE]), [v] "i"(RO_VALUE));
	if (armed) {
		check_true(armed->name, 0, "the instruction did not fault");
		armed = 0;
	}

	// Into ring 3: IRET pops EIP, CS, EFLAGS and, since the privilege
	// level changes, ESP and SS.  The task starts as if called (a return
	// address slot above ESP), with IOPL 0 and interrupts off.
	__asm__ volatile("mov %w0, %%ds\n\t"
			 "mov %w0, %%es\n\t"
			 "mov %w0, %%fs\n\t"
			 "mov %w0, %%gs\n\t"
			 "push %0\n\t"		// SS
			 "push %1\n\t"		// ESP
			 "push %2\n\t"		// EFLAGS
			 "push %3\n\t"		// CS
			 "push %4\n\t"		// EIP
			 "iret"
			 :
			 : "r"(SEL_UDATA | RPL_USER),
			   "r"(ADDR(user_stack + PAGE_SIZE - sizeof(uint32_t))),
			   "i"(FL_FIXED), "i"(SEL_UCODE32 | RPL_USER),
			   "r"(ADDR(user_main)));
	__builtin_unreachable();
}

// ---- The ring-3 task ----
// Runs from USER_TEXT pages and may touch only USER_DATA/USER_RODATA,
// reaching the kernel only through system calls.  Everything it calls must
// be inlined into it (x86.h's helpers are), and its strings must come from
// USER_STR: literals land in the kernel's .rodata.

static inline __attribute__((always_inline)) uint32_t
int80(uint32_t nr, uint32_t a, uint32_t b, uint32_t c)
{
	__asm__ volatile("int %[vec]"
			 : "+a"(nr)
			 : [vec] "i"(SYSCALL_VECTOR), "b"(a), "S"(b), "D"(c)
			 : "memory");
	return nr;
}

// SYSEXIT returns to EDX with ESP = ECX: pass the current ESP and the
// address after the SYSENTER.
static inline __attribute__((always_inline)) uint32_t
sysenter_call(uint32_t nr, uint32_t a, uint32_t b, uint32_t c)
{
	__asm__ volatile("mov %%esp, %%ecx\n\t"
			 "mov $1f, %%edx\n\t"
			 "sysenter\n"
			 "1:"
			 : "+a"(nr)
			 : "b"(a), "S"(b), "D"(c)
			 : "ecx", "edx", "memory");
	return nr;
}

#define USER_CHECK(name, got, want)                                           \
	int80(SYS_CHECK, ADDR(USER_STR(name)), (got), (want))

// Announces a fault the next FAULTING instruction must raise in ring 3.
#define USER_EXPECT(name_, vector_, error_, cr2_)                             \
	do {                                                                  \
		struct fault_expect e_ = { USER_STR(name_), (vector_),        \
					   (error_), (cr2_), RPL_USER };      \
		int80(SYS_EXPECT, ADDR(&e_), 0, 0);                           \
	} while (0)

static const char int80_msg[] USER_RODATA = "PASS int80-write\n";
static const char sysenter_msg[] USER_RODATA = "PASS sysenter-write\n";

static void user_main(void)
{
	// System calls: the kernel prints the message and returns its length.
	USER_CHECK("int80-write-length", int80(SYS_WRITE, ADDR(int80_msg), 0, 0),
		   sizeof int80_msg - 1);
	USER_CHECK("ring3-cpl", int80(SYS_GETCS, 0, 0, 0) & SEL_RPL_MASK, RPL_USER);
	USER_CHECK("ring3-cs", read_cs(), SEL_UCODE32 | RPL_USER);
	USER_CHECK("sysenter-write-length",
		   sysenter_call(SYS_WRITE, ADDR(sysenter_msg), 0, 0),
		   sizeof sysenter_msg - 1);
	USER_CHECK("sysexit-ring3-cs", read_cs(), SEL_UCODE32 | RPL_USER);
	USER_CHECK("sysexit-ring3-ss", read_ss(), SEL_UDATA | RPL_USER);

	// The read-only page reads fine; writing it faults once, then works.
	USER_CHECK("user-ro-page-readable", user_ro_page[RO_PROBE], 0);
	user_ro_page[RO_PROBE] = RO_VALUE;
	USER_CHECK("pagefault-retry", user_ro_page[RO_PROBE], RO_VALUE);

	// Privileged instructions: #GP(0) at CPL 3 with IOPL 0.
	USER_EXPECT("gp-hlt-ring3", VEC_GP, 0, 0);
	FAULTING("", "hlt");
	USER_EXPECT("gp-cli-ring3", VEC_GP, 0, 0);
	FAULTING("", "cli");
	USER_EXPECT("gp-in-ring3", VEC_GP, 0, 0);
	FAULTING("mov %[port], %%dx", "inb %%dx, %%al", [port] "i"(UART_LSR));
	// INT n through a DPL-0 gate: #GP naming the IDT entry.
	USER_EXPECT("gp-int-gate-dpl", VEC_GP, VEC_PF << ERR_INDEX_SHIFT | ERR_IDT, 0);
	FAULTING("", "int %[v]", [v] "i"(VEC_PF));
	USER_EXPECT("ud-ring3", VEC_UD, 0, 0);
	FAULTING("", "ud2");
	USER_EXPECT("de-ring3", VEC_DE, 0, 0);
	FAULTING("xor %%edx, %%edx\n\tmov %[d], %%ecx", "divl %%ecx",
		 [d] "i"(DIVIDE_ERROR_DIVISOR));

	// Page faults: reading a supervisor page, writing an absent one.
	USER_EXPECT("pagefault-supervisor", VEC_PF, PF_ERR_P | PF_ERR_U, ADDR(kernel_page));
	FAULTING("", "mov (%[p]), %%eax", [p] "r"(kernel_page));
	USER_EXPECT("pagefault-not-present", VEC_PF, PF_ERR_W | PF_ERR_U, 0);
	FAULTING("", "movl $0, (%[p])", [p] "r"(0));

	int80(SYS_EXIT, 0, 0, 0);
	for (;;)
		;
}
