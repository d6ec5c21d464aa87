// rom: self-modifying code: patched immediates, the very next instruction, branches, generated code, aliases
//
// Code that writes code, the way JITs, loaders, patchers and old games do,
// checked against what the SDM promises (vol. 3, 11.6 "Self-Modifying
// Code"): a write to an instruction is seen by the next fetch of it, even
// when the instruction is already in the pipeline, because the processor
// snoops stores against the code it fetched by physical address. An
// emulator caching decoded or translated code must do the same: drop what
// it made from the written bytes, and make it again.
//
// Each case runs its code many times before and after the write, so that a
// translator has translated it (and chained it to its neighbours) by the
// time it changes. Under `popek run smc --engine bt --stats` the counter
// "translation flushes: code written" shows what it cost.
#include "cpu.h"
#include "popek.h"

#define ROUNDS 100			// writes per case
#define WARM 8				// runs of the code between two writes
#define ALIAS_VA 0x00400000u		// a second mapping of the JIT buffer's page
#define LEAF (PTE_P | PTE_RW)

#define ADDR(p) ((uint32_t)(uintptr_t)(p))

// The code the cases patch, in .text beside the rest of the kernel.
//   smc_get:    returns its own immediate.
//   smc_next:   stores its argument over the opcode of the instruction right
//               after the store (no jump between), then runs it: 0x40 is
//               `inc eax`, 0x41 `inc ecx`; returns eax + 2 * ecx.
//   smc_branch: a short JMP whose displacement the caller sets, to `a` or `b`.
//   smc_count:  adds one to a counter kept in .text, beside the code.
__asm__(".pushsection .text\n"
	".globl smc_get, smc_next, smc_next_op, smc_branch, smc_branch_a, smc_branch_b\n"
	".globl smc_count, smc_counter\n"
	"smc_get:\n\t"
	"movl $0, %eax\n\t"
	"ret\n"
	"smc_next:\n\t"
	"movl 4(%esp), %edx\n\t"
	"xorl %eax, %eax\n\t"
	"xorl %ecx, %ecx\n\t"
	"movb %dl, smc_next_op\n"
	"smc_next_op:\n\t"
	".byte 0x40\n\t"		// inc eax, until the store above changes it
	"leal (%eax,%ecx,2), %eax\n\t"
	"ret\n"
	"smc_branch:\n\t"
	".byte 0xEB, 0x00\n"		// jmp short smc_branch_a
	"smc_branch_a:\n\t"
	"movl $0xA, %eax\n\t"
	"ret\n"
	"smc_branch_b:\n\t"
	"movl $0xB, %eax\n\t"
	"ret\n"
	"smc_count:\n\t"
	"incl smc_counter\n\t"
	"ret\n\t"
	".balign 4\n"
	"smc_counter:\n\t"
	".long 0\n\t"
	".popsection\n");

extern uint32_t smc_get(void);
extern uint32_t smc_next(uint32_t opcode);
extern uint8_t smc_next_op[];
extern uint32_t smc_branch(void);
extern uint8_t smc_branch_a[], smc_branch_b[];
extern void smc_count(void);
extern volatile uint32_t smc_counter;

typedef uint32_t (*jit_fn)(void);

// A page of its own for generated code, so that the alias case can map it twice.
static uint8_t jit[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static uint32_t pd[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint32_t pt_low[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint32_t pt_alias[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));

static void poke8(void *at, uint8_t v)
{
	*(volatile uint8_t *)at = v;
}

static void poke32(void *at, uint32_t v)
{
	*(volatile uint32_t *)at = v;
}

// An immediate rewritten between runs of a hot function.
static void patched_immediate(void)
{
	uint8_t *imm = (uint8_t *)smc_get + 1;	// B8 imm32 C3
	uint32_t wrong = 0;

	for (uint32_t i = 1; i <= ROUNDS; i++) {
		poke32(imm, i * 7);
		for (unsigned w = 0; w < WARM; w++)
			wrong += smc_get() != i * 7;
	}
	check_field("smc.patched-immediate", "stale results", wrong, 0);
}

// A store to the instruction right after it: seen with no jump in between.
static void next_instruction(void)
{
	uint32_t sum = 0;

	for (uint32_t i = 0; i < ROUNDS; i++)
		sum += smc_next(i & 1 ? 0x41 : 0x40);	// inc ecx : inc eax
	check_field("smc.next-instruction", "sum", sum, ROUNDS / 2 * 1 + ROUNDS / 2 * 2);
	check_field("smc.next-instruction-left", "opcode", smc_next_op[0], 0x41);
}

// A jump retargeted, then the block it leads to rewritten under it.
static void branches(void)
{
	uint8_t *disp = (uint8_t *)smc_branch + 1;
	uint8_t to_a = smc_branch_a - ((uint8_t *)smc_branch + 2);
	uint8_t to_b = smc_branch_b - ((uint8_t *)smc_branch + 2);
	uint32_t wrong = 0;

	for (uint32_t i = 0; i < ROUNDS; i++) {
		int b = i & 1;
		poke8(disp, b ? to_b : to_a);
		for (unsigned w = 0; w < WARM; w++)
			wrong += smc_branch() != (b ? 0xBu : 0xAu);
	}
	check_field("smc.branch-retargeted", "stale results", wrong, 0);

	// The jump now leads to b; change b's immediate (B8 imm32 C3) under it.
	wrong = 0;
	for (uint32_t i = 0; i < ROUNDS; i++) {
		poke32(smc_branch_b + 1, 0xB000 + i);
		for (unsigned w = 0; w < WARM; w++)
			wrong += smc_branch() != 0xB000 + i;
	}
	check_field("smc.branch-target-rewritten", "stale results", wrong, 0);
	poke32(smc_branch_b + 1, 0xB);
}

// Writes a function that loops n times adding k, at `at`:
//   xor eax,eax; mov ecx,n; 1: add eax,k; dec ecx; jnz 1b; ret
static void emit_loop(uint8_t *at, uint32_t n, uint32_t k)
{
	static const uint8_t head[] = { 0x31, 0xC0, 0xB9 };
	unsigned i = 0;

	for (unsigned j = 0; j < sizeof(head); j++)
		at[i++] = head[j];
	poke32(at + i, n);
	i += 4;
	at[i++] = 0x05;
	poke32(at + i, k);
	i += 4;
	at[i++] = 0x49;
	at[i++] = 0x75;
	at[i++] = 0xF8;			// back over add (5), dec (1), jnz (2)
	at[i++] = 0xC3;
}

// A JIT: functions generated into a buffer, run, then generated over.
static void generated_code(void)
{
	uint32_t wrong = 0;

	for (uint32_t i = 1; i <= ROUNDS; i++) {
		uint32_t n = 10 + i, k = 3 * i + 1;
		emit_loop(jit, n, k);
		for (unsigned w = 0; w < WARM; w++)
			wrong += ((jit_fn)jit)() != n * k;
	}
	check_field("smc.generated-code", "wrong results", wrong, 0);
}

// Code copied over code by REP MOVSB, as a loader or a patcher does.
static void string_copy(void)
{
	static const uint8_t one[] = { 0xB8, 0x11, 0x11, 0x11, 0x11, 0xC3 };
	static const uint8_t two[] = { 0xB8, 0x22, 0x22, 0x22, 0x22, 0xC3 };
	uint32_t wrong = 0;

	for (uint32_t i = 0; i < ROUNDS; i++) {
		const uint8_t *src = i & 1 ? two : one;
		void *dst = jit;
		uint32_t len = sizeof(one);
		__asm__ volatile("rep movsb"
				 : "+S"(src), "+D"(dst), "+c"(len)
				 :
				 : "memory");
		for (unsigned w = 0; w < WARM; w++)
			wrong += ((jit_fn)jit)() != (i & 1 ? 0x22222222u : 0x11111111u);
	}
	check_field("smc.rep-movs-over-code", "stale results", wrong, 0);
}

// A counter that shares its page with the code that increments it.
static void data_beside_code(void)
{
	smc_counter = 0;
	for (uint32_t i = 0; i < ROUNDS * WARM; i++)
		smc_count();
	check_eq("smc.data-beside-code", smc_counter, ROUNDS * WARM);
}

// The same physical page at two linear addresses: code written through one
// mapping and run through the other, both ways. Only a cache indexed by
// physical address (as the processor's snoop is) sees every write.
static void aliases(void)
{
	paging32_identity(pd, pt_low, LEAF);
	for (unsigned i = 0; i < PT32_ENTRIES; i++)
		pt_alias[i] = 0;
	pt_alias[0] = ADDR(jit) | LEAF;
	pd[ALIAS_VA >> PD32_SHIFT] = ADDR(pt_alias) | PTE_P | PTE_RW;
	paging32_enable(pd);

	uint8_t *alias = (uint8_t *)ALIAS_VA;
	uint32_t wrong = 0;
	for (uint32_t i = 1; i <= ROUNDS; i++) {
		// Written through the alias, run at the buffer's own address...
		emit_loop(alias, i, 5);
		for (unsigned w = 0; w < WARM; w++)
			wrong += ((jit_fn)jit)() != i * 5;
		// ...then written at its own address, run through the alias.
		emit_loop(jit, i, 9);
		for (unsigned w = 0; w < WARM; w++)
			wrong += ((jit_fn)alias)() != i * 9;
	}
	check_field("smc.aliased-page", "stale results", wrong, 0);
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;
	patched_immediate();
	next_instruction();
	branches();
	generated_code();
	string_copy();
	data_beside_code();
	aliases();
	return check_failures ? 1 : 0;
}
