// rom: segment limits and types on data and stack accesses: #GP(0) and #SS(0) where the SDM says
//
// Protected mode, ring 0, paging off.  Each case loads FS (or ES, SS, CS)
// with a descriptor of its own, then runs one instruction with a fault
// catcher armed for it: a fault there is recorded and the instruction
// skipped.  The case then checks that the instruction faulted with the
// vector and error code the Intel SDM gives (Vol. 3, 5.3 "Limit Checking"
// and 5.4 "Type Checking"), or did not fault.  main returns 0 when every
// case passed.
//
// QEMU's TCG does not check segment limits or types on data accesses, so
// under QEMU the cases that must fault print FAIL; tests/qemu.rs knows
// which.  Every access a case makes stays inside this ROM's arena even when
// nothing stops it, so such a machine runs on unharmed.
#include "cpu.h"
#include "popek.h"

// Descriptor slots after lib/desc.c's GDT.
#define SEL_TEST (GDT_ENTRIES << SEL_INDEX_SHIFT)	// a data segment per case
#define SEL_EXEC_ONLY (SEL_TEST + 8)	// flat execute-only ring-0 code
#define SEL_STACK (SEL_TEST + 16)	// a stack ending at stack_top
#define TEST_SLOTS 3

// Type bits beyond present, S and DPL 0.
#define DATA_RW (DESC_P | DESC_S | DESC_RW)
#define DATA_RO (DESC_P | DESC_S)
#define DATA_RW_DOWN (DATA_RW | DESC_ED)
#define CODE_EXEC_ONLY (DESC_P | DESC_S | DESC_CODE)

#define LAST_BYTE 0xFFF		// the limit of a one-page byte-granular segment
#define PAGE_END 0x1000		// the first offset past it
#define TOP16 0xFFFF		// the highest offset of a 16-bit expand-down segment
#define FXSAVE_AT 0xF00		// an FXSAVE area running 256 bytes past LAST_BYTE
#define MAGIC 0x5EC0A11Du

static uint64_t table[GDT_ENTRIES + TEST_SLOTS] __attribute__((aligned(8)));
static struct gate32 idt[IDT_VECTORS] __attribute__((aligned(8)));
// What the cases point their segments at: 64 KiB, plus a page on each side
// for the accesses that wrap below a base.
static uint8_t arena[18 * PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
#define BASE_PTR (arena + PAGE_SIZE)	// as an asm "i" operand
#define BASE ((uint32_t)(uintptr_t)BASE_PTR)
// The stack of the SS cases, and the exception frames raised on it.
static uint8_t test_stack[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
#define STACK_TOP_PTR (test_stack + PAGE_SIZE)	// as an asm "i" operand
#define STACK_TOP ((uint32_t)(uintptr_t)STACK_TOP_PTR)

// The fault catcher: the instruction at probe_at may fault; a fault there
// is recorded in `caught` and execution resumes at probe_resume.
static volatile uint32_t probe_at, probe_resume;
static volatile struct {
	int hit;
	uint32_t vector, error;
} caught;
// The registers the SS cases move away from, restored after the probe.
static volatile uint32_t saved_esp, saved_ebp;

static void seg_trap(struct trap_frame *f)
{
	if (!probe_at || f->eip != probe_at)
		trap32_unexpected(f);
	caught.hit = 1;
	caught.vector = f->vector;
	caught.error = f->error;
	f->eip = probe_resume;
	probe_at = 0;
}

// Arms the catcher for `insn`, after `setup` and before `after`, which
// runs whether or not insn faulted and must undo what setup changed.
// Labels 1 and 2 are taken; the operands follow, constants all ("i"), as
// the snippets may use every register but EDX and EBP.
#define PROBE(setup, insn, after, ...)                                        \
	__asm__ volatile("movl $1f, probe_at\n\t"                             \
			 "movl $2f, probe_resume\n\t"                         \
			 setup "\n"                                           \
			 "1:\t" insn "\n"                                     \
			 "2:\t" after                                         \
			 :                                                    \
			 : __VA_ARGS__                                        \
			 : "eax", "ebx", "ecx", "esi", "edi", "memory", "cc")

// Loads segment register `sreg` with the selector operand `sel`.
#define LOAD(sreg, sel) "movl " sel ", %%ecx\n\tmov %%ecx, %%" sreg "\n\t"

// Loads FS with SEL_TEST, runs `insn` on it and restores FS.
#define WITH_FS(insn)                                                         \
	PROBE(LOAD("fs", "%[sel]"), insn, LOAD("fs", "%[flat]"),              \
	      [sel] "i"(SEL_TEST), [flat] "i"(SEL_KDATA))

// Describes SEL_TEST: base, raw limit, access byte and flags.
static void test_segment(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
	table[SEL_TEST >> SEL_INDEX_SHIFT] = seg_desc(base, limit, access, flags);
}

// The instruction just probed must have raised `vector` with `error`.
static void expect_fault(const char *name, uint32_t vector, uint32_t error)
{
	if (!caught.hit)
		check_true(name, 0, "no fault");
	else if (caught.vector != vector)
		check_field(name, "vector", caught.vector, vector);
	else
		check_field(name, "error code", caught.error, error);
	caught.hit = 0;
}

// The instruction just probed must not have faulted.
static void expect_no_fault(const char *name)
{
	check_field(name, "fault with vector", caught.hit ? caught.vector : 0, 0);
	caught.hit = 0;
}

static void limits(void)
{
	// One page, byte granular: offsets 0-0xFFF.
	test_segment(BASE, LAST_BYTE, DATA_RW, DESC_DB);
	WITH_FS("movb %%fs:0xFFF, %%al");
	expect_no_fault("seg-byte-limit-last-byte");
	WITH_FS("movb %%fs:0x1000, %%al");
	expect_fault("seg-byte-limit-one-past", VEC_GP, 0);
	WITH_FS("movl %%fs:0xFFD, %%eax");
	expect_fault("seg-dword-straddling-limit", VEC_GP, 0);
	// A 6-byte far pointer whose selector lies past the limit.
	WITH_FS("lgs %%fs:0xFFC, %%eax");
	expect_fault("seg-far-pointer-straddling-limit", VEC_GP, 0);
	WITH_FS("bound %%eax, %%fs:0xFFC");
	expect_fault("seg-bound-straddling-limit", VEC_GP, 0);
	// The 512-byte area from 0xF00 runs past the limit.
	WITH_FS("fxsave %%fs:0xF00");
	expect_fault("seg-fxsave-area-past-limit", VEC_GP, 0);

	// Raw limit 1 in pages: offsets 0-0x1FFF.
	test_segment(BASE, 1, DATA_RW, DESC_G | DESC_DB);
	WITH_FS("movl %%fs:0x1FFC, %%eax");
	expect_no_fault("seg-page-limit-last-dword");
	WITH_FS("movl %%fs:0x1FFD, %%eax");
	expect_fault("seg-page-limit-straddled", VEC_GP, 0);
}

static void expand_down(void)
{
	// B clear: offsets 0x1000-0xFFFF.
	test_segment(BASE, LAST_BYTE, DATA_RW_DOWN, 0);
	WITH_FS("movb %%fs:0x1000, %%al");
	expect_no_fault("seg-expand-down-first-byte");
	WITH_FS("movw %%fs:0xFFFE, %%ax");
	expect_no_fault("seg-expand-down-b0-top-word");
	WITH_FS("movb %%fs:0xFFF, %%al");
	expect_fault("seg-expand-down-at-limit", VEC_GP, 0);
	WITH_FS("movw %%fs:0xFFFF, %%ax");
	expect_fault("seg-expand-down-b0-past-ffff", VEC_GP, 0);

	// B set: offsets 0x1000-0xFFFFFFFF; the top dword is 4 bytes below the base.
	test_segment(BASE, LAST_BYTE, DATA_RW_DOWN, DESC_DB);
	WITH_FS("movl %%fs:0x10000, %%eax");
	expect_no_fault("seg-expand-down-b1-past-ffff");
	WITH_FS("movl %%fs:0xFFFFFFFC, %%eax");
	expect_no_fault("seg-expand-down-b1-top-dword");
	WITH_FS("movl %%fs:0xFFFFFFFE, %%eax");
	expect_fault("seg-expand-down-b1-wrapping", VEC_GP, 0);
}

static void types(void)
{
	volatile uint32_t *word = (volatile uint32_t *)(uintptr_t)BASE;

	*word = MAGIC;
	test_segment(BASE, LAST_BYTE, DATA_RO, DESC_DB);
	WITH_FS("movl %%fs:0, %%eax");
	expect_no_fault("seg-read-only-read");
	WITH_FS("cmpl %%eax, %%fs:0");
	expect_no_fault("seg-read-only-cmp");
	WITH_FS("movl %%eax, %%fs:0");
	expect_fault("seg-read-only-write", VEC_GP, 0);
	WITH_FS("addl %%eax, %%fs:0");
	expect_fault("seg-read-only-add", VEC_GP, 0);
	check_eq("seg-read-only-unchanged", *word, MAGIC);

	// CS holds lib/desc.c's execute/read code segment.
	PROBE("", "movl %%cs:%c[at], %%eax", "", [at] "i"(BASE_PTR));
	expect_no_fault("seg-readable-code-read");
	PROBE("", "movl %%eax, %%cs:%c[at]", "", [at] "i"(BASE_PTR));
	expect_fault("seg-code-write", VEC_GP, 0);
	// The same flat addresses under an execute-only CS, and back.
	PROBE("ljmp %[xo], $3f\n3:", "movl %%cs:%c[at], %%eax", "ljmp %[code], $4f\n4:",
	      [at] "i"(BASE_PTR), [xo] "i"(SEL_EXEC_ONLY), [code] "i"(SEL_KCODE32));
	expect_fault("seg-execute-only-read", VEC_GP, 0);
}

static void null_selectors(void)
{
	PROBE(LOAD("fs", "%[null]"), "movl %%fs:0, %%eax", LOAD("fs", "%[flat]"),
	      [null] "i"(0), [flat] "i"(SEL_KDATA));
	expect_fault("seg-null-fs-read", VEC_GP, 0);
	// STOS writes through ES: a null DS does not matter.
	PROBE(LOAD("ds", "%[null]") "movl %[v], %%eax\n\tmovl %[at], %%edi", "stosl",
	      LOAD("ds", "%[flat]"),
	      [null] "i"(0), [flat] "i"(SEL_KDATA), [v] "i"(MAGIC), [at] "i"(BASE_PTR + 4));
	expect_no_fault("seg-stos-with-null-ds");
	PROBE(LOAD("es", "%[null]") "movl %[v], %%eax\n\tmovl %[at], %%edi", "stosl",
	      LOAD("es", "%[flat]"),
	      [null] "i"(0), [flat] "i"(SEL_KDATA), [v] "i"(MAGIC), [at] "i"(BASE_PTR + 4));
	expect_fault("seg-stos-with-null-es", VEC_GP, 0);
	// MOVS: the source through DS is fine, the destination ES:EDI is not.
	test_segment(BASE, LAST_BYTE, DATA_RW, DESC_DB);
	PROBE(LOAD("es", "%[sel]") "movl %[from], %%esi\n\tmovl %[to], %%edi", "movsl",
	      LOAD("es", "%[flat]"),
	      [sel] "i"(SEL_TEST), [flat] "i"(SEL_KDATA), [from] "i"(BASE_PTR),
	      [to] "i"(LAST_BYTE - 1));
	expect_fault("seg-movs-destination-past-es-limit", VEC_GP, 0);
}

// Switches to SS = SEL_STACK with ESP = STACK_TOP + `sp` and EBP =
// STACK_TOP; OFF_TEST_STACK switches back.
#define ON_TEST_STACK(sp)                                                     \
	"movl %%esp, saved_esp\n\t"                                           \
	"movl %%ebp, saved_ebp\n\t"                                           \
	LOAD("ss", "%[stack]")                                                \
	"movl %[top], %%esp\n\t"                                              \
	"lea " sp "(%%esp), %%esp\n\t"                                        \
	"movl %[top], %%ebp"
#define OFF_TEST_STACK                                                        \
	LOAD("ss", "%[flat]")                                                 \
	"movl saved_esp, %%esp\n\t"                                           \
	"movl saved_ebp, %%ebp"
#define STACK_OPERANDS [stack] "i"(SEL_STACK), [flat] "i"(SEL_KDATA), [top] "i"(STACK_TOP_PTR)

// SS ends at STACK_TOP (page granular, base 0, so SS and DS offsets agree
// and the trap code can run on it): a pop or an EBP-based read past the
// top raises #SS(0), while the exception frame fits below.
static void stack_segment(void)
{
	uint32_t pages = STACK_TOP >> PAGE_SHIFT;

	table[SEL_STACK >> SEL_INDEX_SHIFT] = seg_desc(0, pages - 1, DATA_RW, DESC_G | DESC_DB);
	PROBE(ON_TEST_STACK("-2"), "popl %%eax", OFF_TEST_STACK, STACK_OPERANDS);
	expect_fault("seg-ss-pop-past-limit", VEC_SS, 0);
	PROBE(ON_TEST_STACK("-4"), "popl %%eax", OFF_TEST_STACK, STACK_OPERANDS);
	expect_no_fault("seg-ss-pop-last-dword");
	PROBE(ON_TEST_STACK("-16"), "movl (%%ebp), %%eax", OFF_TEST_STACK, STACK_OPERANDS);
	expect_fault("seg-ss-ebp-read-past-limit", VEC_SS, 0);
	// An offset past FS's limit is a #GP: the segment decides, not the base register.
	test_segment(BASE, LAST_BYTE, DATA_RW, DESC_DB);
	PROBE(LOAD("fs", "%[sel]") "movl %[at], %%ebx", "movl %%fs:(%%ebx), %%eax",
	      LOAD("fs", "%[flat]"), [sel] "i"(SEL_TEST), [flat] "i"(SEL_KDATA),
	      [at] "i"(PAGE_END));
	expect_fault("seg-fs-override-past-limit", VEC_GP, 0);
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;
	gdt_init(0, 0);
	for (unsigned i = 0; i < GDT_ENTRIES; i++)
		table[i] = gdt[i];
	table[SEL_EXEC_ONLY >> SEL_INDEX_SHIFT] =
		seg_desc(0, DESC_LIMIT_4G, CODE_EXEC_ONLY, DESC_G | DESC_DB);
	gdt_load(table, sizeof table / sizeof table[0]);
	trap32_install(idt);
	trap32_handler = seg_trap;

	limits();
	expand_down();
	types();
	null_selectors();
	stack_segment();
	return check_failures ? 1 : 0;
}
