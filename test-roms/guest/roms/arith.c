// rom: self-checking integer instruction tests, one PASS/FAIL line per case
//
// Each case runs a short snippet of hand-written assembly with every general
// register and EFLAGS loaded from a table, captures them all afterwards, and
// compares the registers the case names plus the EFLAGS bits the Intel SDM
// defines for the instruction (undefined flags differ between CPUs and are
// masked out).  The expected values were checked on real hardware with
// guest/host-check and under QEMU, so the output is the same on every
// correct machine.  main returns 0 when every case passed, 1 otherwise.
#include "popek.h"

// EFLAGS bits.
#define CF 0x0001	// carry
#define PF 0x0004	// parity of the result's low byte
#define AF 0x0010	// carry/borrow out of bit 3
#define ZF 0x0040	// zero
#define SF 0x0080	// sign
#define DF 0x0400	// direction: string instructions count down
#define OF 0x0800	// signed overflow
#define STATUS (CF | PF | AF | ZF | SF | OF)	// the six status flags
#define EFLAGS_FIXED 0x0002	// bit 1 of EFLAGS always reads as 1

// Which registers a case compares.
#define R_EAX 0x01
#define R_EBX 0x02
#define R_ECX 0x04
#define R_EDX 0x08
#define R_ESI 0x10
#define R_EDI 0x20
#define R_EBP 0x40

// The machine state a snippet starts from and ends in.  The assembly in
// LOAD_CPU and SAVE_CPU depends on this exact layout; reg[] indexes the
// registers in R_* bit order for the comparison loop.
struct cpu {
	union {
		struct {
			uint32_t eax, ebx, ecx, edx, esi, edi, ebp, eflags;
		};
		uint32_t reg[8];
	};
};
_Static_assert(sizeof(struct cpu) == 32, "LOAD_CPU/SAVE_CPU use fixed offsets");

struct arith_case {
	const char *name;
	void (*run)(struct cpu *c);
	struct cpu in;		// registers and status flags (and DF) going in
	struct cpu want;	// registers and flags expected coming out
	uint32_t regs;		// R_* bits: the registers to compare
	uint32_t flags;		// the EFLAGS bits the SDM defines for the snippet
};

// Memory the snippets may write; cleared before every case.
uint8_t scratch[16] __attribute__((aligned(4)));
// Read-only data for the string instructions: 'A' (0x41) to 'P' (0x50).
const char str_src[16] = "ABCDEFGHIJKLMNOP";
// str_src with byte 7 changed, so CMPS has somewhere to stop.
const char str_cmp[16] = "ABCDEFGXIJKLMNOP";

// Entered with EAX pointing at the struct cpu: keeps the pointer and the
// caller's EBP on the stack, then loads all seven registers and EFLAGS.
#define LOAD_CPU                                                              \
	"push ebp; push eax; push dword ptr [eax+28]\n\t"                     \
	"mov ebx, [eax+4]; mov ecx, [eax+8]; mov edx, [eax+12]\n\t"           \
	"mov esi, [eax+16]; mov edi, [eax+20]; mov ebp, [eax+24]\n\t"         \
	"mov eax, [eax]; popfd\n\t"

// Captures EFLAGS first, before anything can change it, then stores every
// register back through the saved pointer.  DF is cleared at the end
// because C code (and the ABI) assumes it is clear.
#define SAVE_CPU                                                              \
	"\n\tpushfd; push eax; mov eax, [esp+8]\n\t"                          \
	"pop dword ptr [eax]; pop dword ptr [eax+28]\n\t"                     \
	"mov [eax+4], ebx; mov [eax+8], ecx; mov [eax+12], edx\n\t"           \
	"mov [eax+16], esi; mov [eax+20], edi; mov [eax+24], ebp\n\t"         \
	"pop eax; pop ebp; cld\n\t"

// Defines fn to run the Intel-syntax assembly body between LOAD_CPU and
// SAVE_CPU.  Bodies must leave ESP as they found it.
#define SNIPPET(fn, body)                                                     \
	static void fn(struct cpu *c)                                         \
	{                                                                     \
		__asm__ volatile(".intel_syntax noprefix\n\t" LOAD_CPU body   \
				 SAVE_CPU ".att_syntax prefix"                \
				 : "+a"(c)                                    \
				 :                                            \
				 : "ebx", "ecx", "edx", "esi", "edi", "memory", \
				   "cc");                                     \
	}

// A string instruction with ESI and EDI given as offsets into the src and
// dst arrays.  Afterwards EBX and EDX hold scratch[0..7], ESI and EDI are
// offsets again, and EFLAGS is what the string instruction left.
#define STRING_SNIPPET(fn, insn, src, dst)                                    \
	SNIPPET(fn, "lea esi, [esi + " src "]; lea edi, [edi + " dst "]\n\t"  \
		insn "\n\tpushfd; mov ebx, [scratch]; mov edx, [scratch+4]\n\t" \
		"sub esi, offset " src "; sub edi, offset " dst "; popfd")

// Binary ALU instructions.
SNIPPET(add32, "add eax, ebx")
SNIPPET(add16, "add ax, bx")
SNIPPET(add8, "add al, bl")
SNIPPET(add32_imm8, "add eax, -1")
SNIPPET(adc32, "adc eax, ebx")
SNIPPET(adc16, "adc ax, bx")
SNIPPET(adc8, "adc al, bl")
SNIPPET(sub32, "sub eax, ebx")
SNIPPET(sub16, "sub ax, bx")
SNIPPET(sub8_mem, "mov [scratch], ebx; sub byte ptr [scratch], 1; mov eax, [scratch]")
SNIPPET(sbb32, "sbb eax, ebx")
SNIPPET(sbb8, "sbb al, bl")
SNIPPET(cmp32, "cmp eax, ebx")
SNIPPET(cmp16, "cmp ax, bx")
SNIPPET(cmp8, "cmp al, bl")
SNIPPET(and32, "and eax, ebx")
SNIPPET(and16_imm, "and ax, 0x00ff")
SNIPPET(or32, "or eax, ebx")
SNIPPET(or16, "or ax, bx")
SNIPPET(xor32_self, "xor eax, eax")
SNIPPET(xor8, "xor al, bl")
SNIPPET(test32, "test eax, ebx")
SNIPPET(test8, "test al, bl")

// Unary ALU instructions.
SNIPPET(neg32, "neg eax")
SNIPPET(neg16, "neg ax")
SNIPPET(neg8, "neg bl")
SNIPPET(inc32, "inc eax")
SNIPPET(inc16, "inc dx")
SNIPPET(dec32, "dec eax")
SNIPPET(dec8, "dec cl")
SNIPPET(not32, "not eax")
SNIPPET(not16, "not bx")

// Shifts and rotates.
SNIPPET(shl32_1, "shl eax, 1")
SNIPPET(shl32_cl, "shl eax, cl")
SNIPPET(shl16_1, "shl ax, 1")
SNIPPET(shl8_cl, "shl al, cl")
SNIPPET(shr32_1, "shr eax, 1")
SNIPPET(shr32_cl, "shr eax, cl")
SNIPPET(shr8_4, "shr bl, 4")
SNIPPET(sar32_1, "sar eax, 1")
SNIPPET(sar32_cl, "sar eax, cl")
SNIPPET(sar8_2, "sar al, 2")
SNIPPET(sar32_0, "sar eax, 0")
SNIPPET(rol32_1, "rol eax, 1")
SNIPPET(rol32_cl, "rol eax, cl")
SNIPPET(rol8_cl, "rol al, cl")
SNIPPET(ror32_1, "ror eax, 1")
SNIPPET(ror32_cl, "ror eax, cl")
SNIPPET(ror16_cl, "ror bx, cl")
SNIPPET(rcl32_1, "rcl eax, 1")
SNIPPET(rcl8_cl, "rcl al, cl")
SNIPPET(rcr32_1, "rcr eax, 1")
SNIPPET(rcr16_cl, "rcr dx, cl")
SNIPPET(shld32_4, "shld eax, ebx, 4")
SNIPPET(shld32_cl, "shld eax, ebx, cl")
SNIPPET(shrd32_cl, "shrd eax, ebx, cl")
SNIPPET(shrd16_4, "shrd ax, bx, 4")

// Multiply and divide.
SNIPPET(mul8, "mul bl")
SNIPPET(mul16, "mul bx")
SNIPPET(mul32, "mul ebx")
SNIPPET(imul8, "imul bl")
SNIPPET(imul16, "imul bx")
SNIPPET(imul32, "imul ebx")
SNIPPET(imul32_rr, "imul eax, ebx")
SNIPPET(imul16_rr, "imul ax, bx")
SNIPPET(imul32_imm8, "imul eax, ebx, -5")
SNIPPET(imul32_imm32, "imul ecx, ebx, 0x10000")
SNIPPET(imul16_imm, "imul dx, bx, 300")
SNIPPET(div8, "div bl")
SNIPPET(div16, "div bx")
SNIPPET(div32, "div ebx")
SNIPPET(idiv8, "idiv bl")
SNIPPET(idiv16, "idiv bx")
SNIPPET(idiv32, "idiv ebx")

// Bit tests and scans.  The memory forms put EAX and EDX in scratch[0..7]
// and read them back afterwards.
#define BIT_MEM(insn)                                                         \
	"mov [scratch], eax; mov [scratch+4], edx; " insn                     \
	"; mov eax, [scratch]; mov edx, [scratch+4]"
SNIPPET(bt32, "bt eax, ecx")
SNIPPET(bt16, "bt ax, cx")
SNIPPET(bts32, "bts eax, ecx")
SNIPPET(btr32, "btr eax, ecx")
SNIPPET(btc32, "btc eax, ecx")
SNIPPET(bt32_mem, BIT_MEM("bt dword ptr [scratch], ecx"))
SNIPPET(bt16_mem, BIT_MEM("bt word ptr [scratch], cx"))
SNIPPET(bts32_mem, BIT_MEM("bts dword ptr [scratch], ecx"))
SNIPPET(btr32_mem_neg, BIT_MEM("btr dword ptr [scratch+4], ecx"))
SNIPPET(btc32_mem_imm, BIT_MEM("btc dword ptr [scratch], 37"))
SNIPPET(bsf32, "bsf eax, ebx")
SNIPPET(bsf16, "bsf ax, bx")
SNIPPET(bsr32, "bsr eax, ebx")
SNIPPET(bsr16, "bsr ax, bx")

// Data movement.
SNIPPET(bswap32, "bswap eax")
SNIPPET(xchg32, "xchg eax, ebx")
SNIPPET(xchg8, "xchg al, bh")
SNIPPET(xchg32_mem, "mov [scratch], ebx; xchg [scratch], eax; mov ebx, [scratch]")
SNIPPET(cmpxchg32, "cmpxchg ecx, ebx")
SNIPPET(cmpxchg8, "cmpxchg cl, bl")
SNIPPET(xadd32, "xadd eax, ebx")
SNIPPET(xadd16, "xadd cx, dx")
SNIPPET(movzx32_8, "movzx eax, bl")
SNIPPET(movzx32_16, "movzx eax, bx")
SNIPPET(movsx32_8, "movsx eax, bl")
SNIPPET(movsx32_16, "movsx eax, bx")
SNIPPET(movsx16_8, "movsx ax, bl")
SNIPPET(lea_sib, "lea eax, [ebx + ecx*4 + 0x10]")
SNIPPET(lea_index, "lea eax, [ecx*8 - 4]")
SNIPPET(lea_times3, "lea eax, [ebx + ebx*2]")
SNIPPET(lea_wrap, "lea eax, [ebx + ecx]")
SNIPPET(cbw, "cbw")
SNIPPET(cwde, "cwde")
SNIPPET(cwd, "cwd")
SNIPPET(cdq, "cdq")

// SETcc and CMOVcc: the condition is tested once with the flags from the
// table and once more after loading EFLAGS from EBX.  Each row names the
// condition, flags that make it true, and flags that make it false.
#define CONDITIONS(X)                                                         \
	X(o, OF, 0)                                                           \
	X(no, 0, OF)                                                          \
	X(b, CF, 0)                                                           \
	X(ae, 0, CF)                                                          \
	X(e, ZF, 0)                                                           \
	X(ne, 0, ZF)                                                          \
	X(be, ZF, SF | OF | PF)                                               \
	X(a, SF | OF, CF)                                                     \
	X(s, SF, 0)                                                           \
	X(ns, 0, SF)                                                          \
	X(p, PF, 0)                                                           \
	X(np, 0, PF)                                                          \
	X(l, OF, SF | OF)                                                     \
	X(ge, SF | OF, SF)                                                    \
	X(le, ZF | SF | OF, SF | OF)                                          \
	X(g, 0, ZF)
#define CC_SNIPPETS(cc, when_true, when_false)                                \
	SNIPPET(set##cc, "set" #cc " al; push ebx; popfd; set" #cc " ah")     \
	SNIPPET(cmov##cc, "cmov" #cc " eax, ecx; push ebx; popfd; cmov" #cc " edx, esi")
CONDITIONS(CC_SNIPPETS)

// String instructions.
STRING_SNIPPET(rep_movsb, "rep movsb", "str_src", "scratch")
STRING_SNIPPET(rep_movsw, "rep movsw", "str_src", "scratch")
STRING_SNIPPET(rep_movsd, "rep movsd", "str_src", "scratch")
STRING_SNIPPET(rep_stosb, "rep stosb", "str_src", "scratch")
STRING_SNIPPET(rep_stosw, "rep stosw", "str_src", "scratch")
STRING_SNIPPET(stosd, "stosd", "str_src", "scratch")
STRING_SNIPPET(lodsb, "lodsb", "str_src", "scratch")
STRING_SNIPPET(lodsw, "lodsw", "str_src", "scratch")
STRING_SNIPPET(rep_lodsd, "rep lodsd", "str_src", "scratch")
STRING_SNIPPET(repe_cmpsb, "repe cmpsb", "str_src", "str_cmp")
STRING_SNIPPET(repe_cmpsw, "repe cmpsw", "str_src", "str_cmp")
STRING_SNIPPET(repe_cmpsd, "repe cmpsd", "str_src", "str_cmp")
STRING_SNIPPET(repne_cmpsb, "repne cmpsb", "str_src", "str_cmp")
STRING_SNIPPET(repne_scasb, "repne scasb", "str_src", "str_src")
STRING_SNIPPET(repe_scasw, "repe scasw", "str_src", "str_src")
STRING_SNIPPET(repne_scasd, "repne scasd", "str_src", "str_src")

// Stack and control transfer.  ESP itself is never compared, since it
// differs between machines; snippets report differences of ESP instead.
SNIPPET(push_pop32, "mov esi, esp; push ebx; mov edi, esp; pop ecx; sub esi, edi")
SNIPPET(push_pop16, "mov esi, esp; push bx; mov edi, esp; pop cx; sub esi, edi")
SNIPPET(push_imm8, "push -2; pop eax")
SNIPPET(pushad,
	"pushad; mov eax, [esp]; mov ebx, [esp+4]; mov ecx, [esp+8]\n\t"
	"mov edx, [esp+12]; sub edx, esp; add esp, 32")
SNIPPET(popad, "push 1; push 2; push 3; push 4; push 5; push 6; push 7; push 8; popad")
// Masks EAX to the status flags (IF and bit 1 differ between machines),
// then restores the EFLAGS that POPFD set, which AND would have changed.
SNIPPET(pushfd_popfd, "push ebx; popfd; pushfd; pop eax; pushfd; and eax, ecx; popfd")
SNIPPET(enter_leave,
	"mov esi, esp; enter 16, 0; mov edi, esp; mov eax, ebp; leave\n\t"
	"sub esi, edi; sub eax, edi")
SNIPPET(enter1_leave,
	"mov esi, esp; enter 8, 1; mov edi, esp; mov eax, ebp\n\t"
	"mov edx, [ebp-4]; sub edx, ebp; leave; sub esi, edi; sub eax, edi")
// ENTER 4, 2 with a 16-bit operand size on this 32-bit stack: the enclosing
// frame is read at EBP - 2 (not BP - 2), BP gets FrameTemp and EBP's top
// half stays.  EBX = the word read, ECX = bytes allocated, ESI = EBP's top
// half changed, EDI = BP minus the FrameTemp pushed.
SNIPPET(enter16_level2,
	"mov edx, esp; mov word ptr [scratch+6], 0xBEEF; lea ebp, [scratch+8]\n\t"
	".byte 0x66, 0xC8, 0x04, 0x00, 0x02\n\t"
	"movzx ebx, word ptr [esp+6]; mov ecx, edx; sub ecx, esp\n\t"
	"mov esi, ebp; xor esi, offset scratch+8; shr esi, 16\n\t"
	"movzx edi, bp; movzx eax, word ptr [esp+4]; sub edi, eax; mov esp, edx")
SNIPPET(call_pop, "call 1f; 1: pop eax; sub eax, offset 1b")
SNIPPET(call_ret, "mov esi, esp; call 1f; jmp 2f; 1: mov eax, 42; ret; 2: sub esi, esp")
SNIPPET(call_ret_imm,
	"mov esi, esp; push 7; push 9; call 1f; jmp 2f\n\t"
	"1: mov eax, [esp+4]; add eax, [esp+8]; ret 8\n\t"
	"2: sub esi, esp")
SNIPPET(call_reg, "mov ebx, offset 1f; call ebx; jmp 2f; 1: mov eax, 7; ret; 2:")
SNIPPET(loop, "xor eax, eax; 1: inc eax; loop 1b")
SNIPPET(loope, "1: inc eax; test eax, 4; loope 1b")
SNIPPET(loopne, "1: inc eax; cmp eax, 3; loopne 1b")
SNIPPET(jecxz, "mov eax, 1; jecxz 1f; mov eax, 2; 1:")

// C-level tests: gcc compiles 64-bit arithmetic into instruction sequences
// (and div64.c calls), which exercises the CPU the way real programs do.
// 64-bit operands arrive as EDX:EAX and ECX:EBX; results leave the same way.
static uint64_t arg_a(const struct cpu *c)
{
	return (uint64_t)c->edx << 32 | c->eax;
}

static uint64_t arg_b(const struct cpu *c)
{
	return (uint64_t)c->ecx << 32 | c->ebx;
}

static void set_pair(struct cpu *c, uint64_t a, uint64_t b)
{
	c->eax = (uint32_t)a;
	c->edx = (uint32_t)(a >> 32);
	c->ebx = (uint32_t)b;
	c->ecx = (uint32_t)(b >> 32);
}

static void c_mul64(struct cpu *c)
{
	set_pair(c, arg_a(c) * arg_b(c), 0);
}

static void c_udivmod64(struct cpu *c)
{
	set_pair(c, arg_a(c) / arg_b(c), arg_a(c) % arg_b(c));
}

static void c_sdivmod64(struct cpu *c)
{
	int64_t a = (int64_t)arg_a(c), b = (int64_t)arg_b(c);

	set_pair(c, (uint64_t)(a / b), (uint64_t)(a % b));
}

// Shift counts come in EBX.
static void c_shl64(struct cpu *c)
{
	set_pair(c, arg_a(c) << c->ebx, 0);
}

static void c_shr64(struct cpu *c)
{
	set_pair(c, arg_a(c) >> c->ebx, 0);
}

static void c_sar64(struct cpu *c)
{
	// gcc defines >> on negative values as an arithmetic shift.
	set_pair(c, (uint64_t)((int64_t)arg_a(c) >> c->ebx), 0);
}

// The standard CRC-32 (IEEE 802.3, reflected), bit by bit.
static void c_crc32(struct cpu *c)
{
	const char *s = "123456789";	// the customary check input
	uint32_t crc = ~0u;

	while (*s) {
		crc ^= (uint8_t)*s++;
		for (int i = 0; i < 8; i++)
			crc = crc >> 1 ^ (crc & 1 ? 0xEDB88320u : 0);	// polynomial
	}
	c->eax = ~crc;
}

#define ADLER_MOD 65521	// Adler-32's modulus: the largest prime below 2^16

static void c_adler32(struct cpu *c)
{
	const char *s = "The quick brown fox jumps over the lazy dog";
	uint32_t a = 1, b = 0;

	while (*s) {
		a = (a + (uint8_t)*s++) % ADLER_MOD;
		b = (b + a) % ADLER_MOD;
	}
	c->eax = b << 16 | a;
}

// The table.  Each row: name, snippet, state in, state wanted, registers to
// compare, defined flags.  Flags not in the last column are undefined by the
// SDM for that instruction, so they are not compared.
static const struct arith_case cases[] = {
	// ADD/ADC/SUB/SBB/CMP define all six status flags.
	{ "add32.of", add32, { .eax = 0x7FFFFFFF, .ebx = 1 },
	  { .eax = 0x80000000, .eflags = OF | SF | AF | PF }, R_EAX, STATUS },
	{ "add32.carry", add32, { .eax = 0xFFFFFFFF, .ebx = 1 },
	  { .eax = 0, .eflags = CF | ZF | AF | PF }, R_EAX, STATUS },
	{ "add16", add16, { .eax = 0xAAAA7FFF, .ebx = 1 },
	  { .eax = 0xAAAA8000, .eflags = OF | SF | AF | PF }, R_EAX, STATUS },
	{ "add8", add8, { .eax = 0x12345680, .ebx = 0x80 },
	  { .eax = 0x12345600, .eflags = CF | OF | ZF | PF }, R_EAX, STATUS },
	{ "add32.imm8", add32_imm8, { .eax = 1 },
	  { .eax = 0, .eflags = CF | ZF | AF | PF }, R_EAX, STATUS },
	{ "adc32.cf1", adc32, { .eax = 0xFFFFFFFF, .ebx = 0, .eflags = CF },
	  { .eax = 0, .eflags = CF | ZF | AF | PF }, R_EAX, STATUS },
	{ "adc32.cf0", adc32, { .eax = 1, .ebx = 2 },
	  { .eax = 3, .eflags = PF }, R_EAX, STATUS },
	{ "adc16", adc16, { .eax = 0x0000FFFF, .ebx = 0, .eflags = CF },
	  { .eax = 0, .eflags = CF | ZF | AF | PF }, R_EAX, STATUS },
	{ "adc8", adc8, { .eax = 0x7F, .ebx = 0, .eflags = CF },
	  { .eax = 0x80, .eflags = OF | SF | AF }, R_EAX, STATUS },
	{ "sub32.borrow", sub32, { .eax = 0, .ebx = 1 },
	  { .eax = 0xFFFFFFFF, .eflags = CF | SF | AF | PF }, R_EAX, STATUS },
	{ "sub32.of", sub32, { .eax = 0x80000000, .ebx = 1 },
	  { .eax = 0x7FFFFFFF, .eflags = OF | AF | PF }, R_EAX, STATUS },
	{ "sub16", sub16, { .eax = 0x12340005, .ebx = 5 },
	  { .eax = 0x12340000, .eflags = ZF | PF }, R_EAX, STATUS },
	{ "sub8.mem", sub8_mem, { .ebx = 0x100 },
	  { .eax = 0x1FF, .eflags = CF | SF | AF | PF }, R_EAX, STATUS },
	{ "sbb32", sbb32, { .eax = 5, .ebx = 5, .eflags = CF },
	  { .eax = 0xFFFFFFFF, .eflags = CF | SF | AF | PF }, R_EAX, STATUS },
	{ "sbb8", sbb8, { .eax = 0x80, .ebx = 0, .eflags = CF },
	  { .eax = 0x7F, .eflags = OF | AF }, R_EAX, STATUS },
	{ "cmp32.eq", cmp32, { .eax = 0x1234, .ebx = 0x1234 },
	  { .eax = 0x1234, .eflags = ZF | PF }, R_EAX, STATUS },
	{ "cmp32.lt", cmp32, { .eax = 0xFFFFFFFE, .ebx = 1 },
	  { .eax = 0xFFFFFFFE, .eflags = SF }, R_EAX, STATUS },
	{ "cmp16", cmp16, { .eax = 0x8000, .ebx = 1 },
	  { .eax = 0x8000, .eflags = OF | AF | PF }, R_EAX, STATUS },
	{ "cmp8", cmp8, { .eax = 1, .ebx = 2 },
	  { .eax = 1, .eflags = CF | SF | AF | PF }, R_EAX, STATUS },

	// AND/OR/XOR/TEST clear CF and OF; AF is undefined.
	{ "and32", and32, { .eax = 0xF0F0F0F0, .ebx = 0x0FF00FF0, .eflags = CF | OF },
	  { .eax = 0x00F000F0, .eflags = PF }, R_EAX, STATUS & ~AF },
	{ "and32.zero", and32, { .eax = 0xAAAAAAAA, .ebx = 0x55555555 },
	  { .eax = 0, .eflags = ZF | PF }, R_EAX, STATUS & ~AF },
	{ "and16.imm", and16_imm, { .eax = 0xFFFF1234, .eflags = CF | OF },
	  { .eax = 0xFFFF0034, .eflags = 0 }, R_EAX, STATUS & ~AF },
	{ "or32", or32, { .eax = 0x80000000, .ebx = 1, .eflags = CF | OF },
	  { .eax = 0x80000001, .eflags = SF }, R_EAX, STATUS & ~AF },
	{ "or16", or16, { .eax = 0xFFFF0000, .ebx = 0 },
	  { .eax = 0xFFFF0000, .eflags = ZF | PF }, R_EAX, STATUS & ~AF },
	{ "xor32.self", xor32_self, { .eax = 0x1234, .eflags = CF | OF | SF },
	  { .eax = 0, .eflags = ZF | PF }, R_EAX, STATUS & ~AF },
	{ "xor8", xor8, { .eax = 0x0F, .ebx = 0xF0 },
	  { .eax = 0xFF, .eflags = SF | PF }, R_EAX, STATUS & ~AF },
	{ "test32", test32, { .eax = 0x80, .ebx = 0x80, .eflags = CF | OF | ZF },
	  { .eax = 0x80, .eflags = 0 }, R_EAX, STATUS & ~AF },
	{ "test8", test8, { .eax = 0x80, .ebx = 0x80 },
	  { .eax = 0x80, .eflags = SF }, R_EAX, STATUS & ~AF },

	// NEG sets CF unless the operand was 0; INC/DEC leave CF alone;
	// NOT touches no flags.
	{ "neg32.zero", neg32, { .eax = 0, .eflags = CF },
	  { .eax = 0, .eflags = ZF | PF }, R_EAX, STATUS },
	{ "neg32.min", neg32, { .eax = 0x80000000 },
	  { .eax = 0x80000000, .eflags = CF | OF | SF | PF }, R_EAX, STATUS },
	{ "neg16", neg16, { .eax = 0x12340001 },
	  { .eax = 0x1234FFFF, .eflags = CF | SF | AF | PF }, R_EAX, STATUS },
	{ "neg8", neg8, { .ebx = 0xABCD007F },
	  { .ebx = 0xABCD0081, .eflags = CF | SF | AF | PF }, R_EBX, STATUS },
	{ "inc32.of", inc32, { .eax = 0x7FFFFFFF, .eflags = CF },
	  { .eax = 0x80000000, .eflags = CF | OF | SF | AF | PF }, R_EAX, STATUS },
	{ "inc32.wrap", inc32, { .eax = 0xFFFFFFFF },
	  { .eax = 0, .eflags = ZF | AF | PF }, R_EAX, STATUS },
	{ "inc16", inc16, { .edx = 0x1234FFFF, .eflags = CF },
	  { .edx = 0x12340000, .eflags = CF | ZF | AF | PF }, R_EDX, STATUS },
	{ "dec32.of", dec32, { .eax = 0x80000000, .eflags = CF },
	  { .eax = 0x7FFFFFFF, .eflags = CF | OF | AF | PF }, R_EAX, STATUS },
	{ "dec8", dec8, { .ecx = 0x100 },
	  { .ecx = 0x1FF, .eflags = SF | AF | PF }, R_ECX, STATUS },
	{ "not32", not32, { .eax = 0x0F0F0F0F, .eflags = STATUS },
	  { .eax = 0xF0F0F0F0, .eflags = STATUS }, R_EAX, STATUS },
	{ "not16", not16, { .ebx = 0x12340000 },
	  { .ebx = 0x1234FFFF, .eflags = 0 }, R_EBX, STATUS },

	// Shifts: CF is the last bit out; OF is defined only for 1-bit
	// shifts; AF is undefined; a count of 0 (after masking to 5 bits)
	// changes no flags at all.
	{ "shl32.1", shl32_1, { .eax = 0xC0000001 },
	  { .eax = 0x80000002, .eflags = CF | SF }, R_EAX, STATUS & ~AF },
	{ "shl32.1.of", shl32_1, { .eax = 0x40000000 },
	  { .eax = 0x80000000, .eflags = OF | SF | PF }, R_EAX, STATUS & ~AF },
	{ "shl32.cl4", shl32_cl, { .eax = 0x12345678, .ecx = 4 },
	  { .eax = 0x23456780, .eflags = CF }, R_EAX, CF | PF | ZF | SF },
	{ "shl32.cl0", shl32_cl, { .eax = 0x12345678, .ecx = 0, .eflags = CF | ZF | OF | PF | AF },
	  { .eax = 0x12345678, .eflags = CF | ZF | OF | PF | AF }, R_EAX, STATUS },
	{ "shl32.cl32", shl32_cl, { .eax = 0x12345678, .ecx = 32, .eflags = SF | AF },
	  { .eax = 0x12345678, .eflags = SF | AF }, R_EAX, STATUS },
	{ "shl16.1", shl16_1, { .eax = 0xFFFF8000 },
	  { .eax = 0xFFFF0000, .eflags = CF | OF | ZF | PF }, R_EAX, STATUS & ~AF },
	{ "shl8.cl3", shl8_cl, { .eax = 0x31, .ecx = 3 },
	  { .eax = 0x88, .eflags = CF | SF | PF }, R_EAX, CF | PF | ZF | SF },
	{ "shr32.1", shr32_1, { .eax = 0x80000001 },
	  { .eax = 0x40000000, .eflags = CF | OF | PF }, R_EAX, STATUS & ~AF },
	{ "shr32.cl8", shr32_cl, { .eax = 0x12345678, .ecx = 8, .eflags = CF },
	  { .eax = 0x00123456, .eflags = PF }, R_EAX, CF | PF | ZF | SF },
	{ "shr8.4", shr8_4, { .ebx = 0xAB },
	  { .ebx = 0x0A, .eflags = CF | PF }, R_EBX, CF | PF | ZF | SF },
	{ "sar32.1", sar32_1, { .eax = 0x80000001, .eflags = OF },
	  { .eax = 0xC0000000, .eflags = CF | SF | PF }, R_EAX, STATUS & ~AF },
	{ "sar32.cl31", sar32_cl, { .eax = 0x80000000, .ecx = 31, .eflags = CF },
	  { .eax = 0xFFFFFFFF, .eflags = SF | PF }, R_EAX, CF | PF | ZF | SF },
	{ "sar8.2", sar8_2, { .eax = 0x85 },
	  { .eax = 0xE1, .eflags = SF | PF }, R_EAX, CF | PF | ZF | SF },
	{ "sar32.0", sar32_0, { .eax = 0x80000001, .eflags = CF | PF | ZF },
	  { .eax = 0x80000001, .eflags = CF | PF | ZF }, R_EAX, STATUS },

	// Rotates change only CF and (for 1-bit rotates) OF.  RCL/RCR by 0
	// modulo 9 or 17 rotate nothing and leave CF alone.
	{ "rol32.1", rol32_1, { .eax = 0x80000001, .eflags = ZF | PF },
	  { .eax = 0x00000003, .eflags = CF | OF | ZF | PF }, R_EAX, STATUS },
	{ "rol32.cl4", rol32_cl, { .eax = 0x12345678, .ecx = 4, .eflags = SF | AF },
	  { .eax = 0x23456781, .eflags = CF | SF | AF }, R_EAX, STATUS & ~OF },
	{ "rol8.cl8", rol8_cl, { .eax = 0x81, .ecx = 8 },
	  { .eax = 0x81, .eflags = CF }, R_EAX, STATUS & ~OF },
	{ "ror32.1", ror32_1, { .eax = 1 },
	  { .eax = 0x80000000, .eflags = CF | OF }, R_EAX, STATUS },
	{ "ror32.cl0", ror32_cl, { .eax = 0x12345678, .ecx = 0, .eflags = CF | OF },
	  { .eax = 0x12345678, .eflags = CF | OF }, R_EAX, STATUS },
	{ "ror16.cl4", ror16_cl, { .ebx = 0xAAAA1234, .ecx = 4, .eflags = CF | ZF },
	  { .ebx = 0xAAAA4123, .eflags = ZF }, R_EBX, STATUS & ~OF },
	{ "rcl32.1", rcl32_1, { .eax = 0x80000000, .eflags = CF },
	  { .eax = 0x00000001, .eflags = CF | OF }, R_EAX, STATUS },
	{ "rcl8.cl2", rcl8_cl, { .eax = 0x40, .ecx = 2, .eflags = CF },
	  { .eax = 0x02, .eflags = CF }, R_EAX, STATUS & ~OF },
	{ "rcl8.cl9", rcl8_cl, { .eax = 0x81, .ecx = 9, .eflags = CF },
	  { .eax = 0x81, .eflags = CF }, R_EAX, STATUS & ~OF },
	{ "rcr32.1", rcr32_1, { .eax = 1 },
	  { .eax = 0, .eflags = CF }, R_EAX, STATUS },
	{ "rcr16.cl3", rcr16_cl, { .edx = 0xFFFF0005, .ecx = 3, .eflags = CF | SF },
	  { .edx = 0xFFFF6000, .eflags = CF | SF }, R_EDX, STATUS & ~OF },

	// SHLD/SHRD: like shifts, with bits filled from the second register.
	{ "shld32.4", shld32_4, { .eax = 0x12345678, .ebx = 0x9ABCDEF0 },
	  { .eax = 0x23456789, .ebx = 0x9ABCDEF0, .eflags = CF }, R_EAX | R_EBX, CF | PF | ZF | SF },
	{ "shld32.cl1", shld32_cl, { .eax = 0x40000000, .ebx = 0x80000000, .ecx = 1 },
	  { .eax = 0x80000001, .eflags = OF | SF }, R_EAX, STATUS & ~AF },
	{ "shld32.cl0", shld32_cl, { .eax = 0x1234, .ebx = 0xFFFFFFFF, .ecx = 0, .eflags = CF | ZF },
	  { .eax = 0x1234, .eflags = CF | ZF }, R_EAX, STATUS },
	{ "shrd32.cl8", shrd32_cl, { .eax = 0x12345678, .ebx = 0xAB, .ecx = 8 },
	  { .eax = 0xAB123456, .eflags = SF | PF }, R_EAX, CF | PF | ZF | SF },
	{ "shrd16.4", shrd16_4, { .eax = 0xFFFF1234, .ebx = 0xF },
	  { .eax = 0xFFFFF123, .eflags = SF }, R_EAX, CF | PF | ZF | SF },

	// MUL/IMUL define only CF and OF: set when the high half matters.
	{ "mul8", mul8, { .eax = 0xFFFF0010, .ebx = 0x10 },
	  { .eax = 0xFFFF0100, .eflags = CF | OF }, R_EAX, CF | OF },
	{ "mul16", mul16, { .eax = 0x11111234, .ebx = 2, .edx = 0xAAAA5555 },
	  { .eax = 0x11112468, .edx = 0xAAAA0000, .eflags = 0 }, R_EAX | R_EDX, CF | OF },
	{ "mul32", mul32, { .eax = 0xFFFFFFFF, .ebx = 0xFFFFFFFF },
	  { .eax = 1, .edx = 0xFFFFFFFE, .eflags = CF | OF }, R_EAX | R_EDX, CF | OF },
	{ "imul8", imul8, { .eax = 0x123400FF, .ebx = 0x80 },
	  { .eax = 0x12340080, .eflags = CF | OF }, R_EAX, CF | OF },
	{ "imul16", imul16, { .eax = 0xFFFE, .ebx = 3, .edx = 0x12340000 },
	  { .eax = 0xFFFA, .edx = 0x1234FFFF, .eflags = 0 }, R_EAX | R_EDX, CF | OF },
	{ "imul32", imul32, { .eax = 0x10000, .ebx = 0x10000 },
	  { .eax = 0, .edx = 1, .eflags = CF | OF }, R_EAX | R_EDX, CF | OF },
	{ "imul32.rr", imul32_rr, { .eax = 0xFFFFFFFD, .ebx = 7, .edx = 0x5555 },
	  { .eax = 0xFFFFFFEB, .edx = 0x5555, .eflags = 0 }, R_EAX | R_EDX, CF | OF },
	{ "imul16.rr", imul16_rr, { .eax = 0xABCD0100, .ebx = 0x100 },
	  { .eax = 0xABCD0000, .eflags = CF | OF }, R_EAX, CF | OF },
	{ "imul32.imm8", imul32_imm8, { .ebx = 7 },
	  { .eax = 0xFFFFFFDD, .eflags = 0 }, R_EAX, CF | OF },
	{ "imul32.imm32", imul32_imm32, { .ebx = 0x8000 },
	  { .ecx = 0x80000000, .eflags = CF | OF }, R_ECX, CF | OF },
	{ "imul16.imm", imul16_imm, { .ebx = 100, .edx = 0x55550000 },
	  { .edx = 0x55557530, .eflags = 0 }, R_EDX, CF | OF },

	// DIV/IDIV leave every status flag undefined.
	{ "div8", div8, { .eax = 0xAAAA0107, .ebx = 0x10 },
	  { .eax = 0xAAAA0710 }, R_EAX, 0 },
	{ "div16", div16, { .eax = 0x56780000, .edx = 0x12340001, .ebx = 3 },
	  { .eax = 0x56785555, .edx = 0x12340001 }, R_EAX | R_EDX, 0 },
	{ "div32", div32, { .eax = 3, .edx = 5, .ebx = 0x10 },
	  { .eax = 0x50000000, .edx = 3 }, R_EAX | R_EDX, 0 },
	{ "idiv8", idiv8, { .eax = 0xFF9C, .ebx = 7 },
	  { .eax = 0xFEF2 }, R_EAX, 0 },
	{ "idiv16", idiv16, { .eax = 0xFC18, .edx = 0xFFFF, .ebx = 0xFFF9 },
	  { .eax = 0x008E, .edx = 0xFFFA }, R_EAX | R_EDX, 0 },
	{ "idiv32", idiv32, { .eax = 0xFFFFFFF9, .edx = 0xFFFFFFFF, .ebx = 2 },
	  { .eax = 0xFFFFFFFD, .edx = 0xFFFFFFFF }, R_EAX | R_EDX, 0 },

	// BT*: CF gets the old bit, ZF is unaffected, the rest undefined.
	// Register bit offsets wrap at the operand size; memory ones reach
	// any byte (even below the operand) except with an immediate.
	{ "bt32", bt32, { .eax = 0x10, .ecx = 4, .eflags = ZF },
	  { .eax = 0x10, .eflags = CF | ZF }, R_EAX, CF | ZF },
	{ "bt32.wrap", bt32, { .eax = 0x10, .ecx = 36 },
	  { .eax = 0x10, .eflags = CF }, R_EAX, CF | ZF },
	{ "bt16.wrap", bt16, { .eax = 0x8000, .ecx = 31 },
	  { .eax = 0x8000, .eflags = CF }, R_EAX, CF | ZF },
	{ "bts32", bts32, { .eax = 0, .ecx = 31, .eflags = CF | ZF },
	  { .eax = 0x80000000, .eflags = ZF }, R_EAX, CF | ZF },
	{ "btr32", btr32, { .eax = 0xFFFFFFFF, .ecx = 0 },
	  { .eax = 0xFFFFFFFE, .eflags = CF }, R_EAX, CF | ZF },
	{ "btc32", btc32, { .eax = 0x100, .ecx = 8 },
	  { .eax = 0, .eflags = CF }, R_EAX, CF | ZF },
	{ "bt32.mem63", bt32_mem, { .edx = 0x80000000, .ecx = 63 },
	  { .eax = 0, .edx = 0x80000000, .eflags = CF }, R_EAX | R_EDX, CF | ZF },
	{ "bt16.mem20", bt16_mem, { .eax = 0x00100000, .ecx = 20 },
	  { .eax = 0x00100000, .eflags = CF }, R_EAX, CF | ZF },
	{ "bts32.mem37", bts32_mem, { .eax = 0, .edx = 1, .ecx = 37, .eflags = CF },
	  { .eax = 0, .edx = 0x21, .eflags = 0 }, R_EAX | R_EDX, CF | ZF },
	{ "btr32.mem.neg1", btr32_mem_neg, { .eax = 0x80000001, .edx = 0xFF, .ecx = 0xFFFFFFFF },
	  { .eax = 0x00000001, .edx = 0xFF, .eflags = CF }, R_EAX | R_EDX, CF | ZF },
	{ "btc32.mem.imm37", btc32_mem_imm, { .eax = 0x20, .edx = 0x20 },
	  { .eax = 0, .edx = 0x20, .eflags = CF }, R_EAX | R_EDX, CF | ZF },

	// BSF/BSR define only ZF; the destination is undefined for input 0.
	{ "bsf32", bsf32, { .ebx = 0x18000, .eflags = ZF },
	  { .eax = 15, .eflags = 0 }, R_EAX, ZF },
	{ "bsr32", bsr32, { .ebx = 0x18000 },
	  { .eax = 16, .eflags = 0 }, R_EAX, ZF },
	{ "bsf32.zero", bsf32, { .ebx = 0 },
	  { .eflags = ZF }, 0, ZF },
	{ "bsf16", bsf16, { .eax = 0xFFFFFFFF, .ebx = 0x8000 },
	  { .eax = 0xFFFF000F, .eflags = 0 }, R_EAX, ZF },
	{ "bsr16", bsr16, { .eax = 0xFFFFFFFF, .ebx = 1 },
	  { .eax = 0xFFFF0000, .eflags = 0 }, R_EAX, ZF },

	// Data movement changes no flags unless it compares.
	{ "bswap", bswap32, { .eax = 0x12345678, .eflags = CF | ZF },
	  { .eax = 0x78563412, .eflags = CF | ZF }, R_EAX, STATUS },
	{ "xchg32", xchg32, { .eax = 1, .ebx = 2 },
	  { .eax = 2, .ebx = 1 }, R_EAX | R_EBX, 0 },
	{ "xchg8", xchg8, { .eax = 0x11223344, .ebx = 0x55667788 },
	  { .eax = 0x11223377, .ebx = 0x55664488 }, R_EAX | R_EBX, 0 },
	{ "xchg32.mem", xchg32_mem, { .eax = 1, .ebx = 2 },
	  { .eax = 2, .ebx = 1 }, R_EAX | R_EBX, 0 },
	{ "cmpxchg32.eq", cmpxchg32, { .eax = 5, .ecx = 5, .ebx = 9 },
	  { .eax = 5, .ecx = 9, .eflags = ZF | PF }, R_EAX | R_ECX, STATUS },
	{ "cmpxchg32.ne", cmpxchg32, { .eax = 5, .ecx = 7, .ebx = 9 },
	  { .eax = 7, .ecx = 7, .eflags = CF | SF | AF }, R_EAX | R_ECX, STATUS },
	{ "cmpxchg8.eq", cmpxchg8, { .eax = 0x1142, .ecx = 0x2242, .ebx = 0x99 },
	  { .eax = 0x1142, .ecx = 0x2299, .eflags = ZF | PF }, R_EAX | R_ECX, STATUS },
	{ "xadd32", xadd32, { .eax = 0xFFFFFFFF, .ebx = 1 },
	  { .eax = 0, .ebx = 0xFFFFFFFF, .eflags = CF | ZF | AF | PF }, R_EAX | R_EBX, STATUS },
	{ "xadd16", xadd16, { .ecx = 0xAAAA7FFF, .edx = 0xBBBB0001 },
	  { .ecx = 0xAAAA8000, .edx = 0xBBBB7FFF, .eflags = OF | SF | AF | PF }, R_ECX | R_EDX, STATUS },
	{ "movzx32.8", movzx32_8, { .eax = 0xFFFFFFFF, .ebx = 0x1234F6F0 },
	  { .eax = 0xF0 }, R_EAX, 0 },
	{ "movzx32.16", movzx32_16, { .eax = 0xFFFFFFFF, .ebx = 0x1234F6F0 },
	  { .eax = 0xF6F0 }, R_EAX, 0 },
	{ "movsx32.8", movsx32_8, { .ebx = 0x1234F6F0 },
	  { .eax = 0xFFFFFFF0 }, R_EAX, 0 },
	{ "movsx32.16", movsx32_16, { .ebx = 0x12347FFF },
	  { .eax = 0x00007FFF }, R_EAX, 0 },
	{ "movsx16.8", movsx16_8, { .eax = 0x12345678, .ebx = 0x80 },
	  { .eax = 0x1234FF80 }, R_EAX, 0 },
	{ "lea.sib", lea_sib, { .ebx = 0x1000, .ecx = 3 },
	  { .eax = 0x101C }, R_EAX, 0 },
	{ "lea.index", lea_index, { .ecx = 2 },
	  { .eax = 12 }, R_EAX, 0 },
	{ "lea.times3", lea_times3, { .ebx = 5 },
	  { .eax = 15 }, R_EAX, 0 },
	{ "lea.wrap", lea_wrap, { .ebx = 0xFFFFFFFF, .ecx = 2, .eflags = STATUS },
	  { .eax = 1, .eflags = STATUS }, R_EAX, STATUS },
	{ "cbw", cbw, { .eax = 0x12345680 },
	  { .eax = 0x1234FF80 }, R_EAX, 0 },
	{ "cwde", cwde, { .eax = 0x12348000 },
	  { .eax = 0xFFFF8000 }, R_EAX, 0 },
	{ "cwd", cwd, { .eax = 0x8000, .edx = 0x12345678 },
	  { .eax = 0x8000, .edx = 0x1234FFFF }, R_EAX | R_EDX, 0 },
	{ "cdq", cdq, { .eax = 0x7FFFFFFF, .edx = 0xFFFFFFFF },
	  { .eax = 0x7FFFFFFF, .edx = 0 }, R_EAX | R_EDX, 0 },

	// SETcc writes 1 to AL (true) and 0 to AH (false); CMOVcc moves ECX
	// to EAX (true) but not ESI to EDX (false).
#define CC_CASES(cc, when_true, when_false)                                   \
	{ "set" #cc, set##cc, { .eflags = when_true, .ebx = when_false },     \
	  { .eax = 0x0001, .eflags = when_false }, R_EAX, STATUS },           \
	{ "cmov" #cc, cmov##cc,                                               \
	  { .eax = 0xA0, .ecx = 0xC0, .edx = 0xD0, .esi = 0x50,               \
	    .eflags = when_true, .ebx = when_false },                         \
	  { .eax = 0xC0, .edx = 0xD0, .eflags = when_false },                 \
	  R_EAX | R_EDX, STATUS },
	CONDITIONS(CC_CASES)

	// String instructions, counting up (DF=0) and down (DF=1).  ESI and
	// EDI are offsets; EBX:EDX show scratch[0..7] afterwards.
	{ "rep.movsb", rep_movsb, { .ecx = 5 },
	  { .ebx = 0x44434241, .edx = 0x45, .ecx = 0, .esi = 5, .edi = 5 },
	  R_EBX | R_EDX | R_ECX | R_ESI | R_EDI, 0 },
	{ "rep.movsb.down", rep_movsb, { .ecx = 3, .esi = 7, .edi = 7, .eflags = DF },
	  { .ebx = 0, .edx = 0x48474600, .ecx = 0, .esi = 4, .edi = 4 },
	  R_EBX | R_EDX | R_ECX | R_ESI | R_EDI, 0 },
	{ "rep.movsb.ecx0", rep_movsb, { .ecx = 0, .esi = 3, .edi = 3 },
	  { .ebx = 0, .edx = 0, .ecx = 0, .esi = 3, .edi = 3 },
	  R_EBX | R_EDX | R_ECX | R_ESI | R_EDI, 0 },
	{ "rep.movsw", rep_movsw, { .ecx = 3 },
	  { .ebx = 0x44434241, .edx = 0x4645, .ecx = 0, .esi = 6, .edi = 6 },
	  R_EBX | R_EDX | R_ECX | R_ESI | R_EDI, 0 },
	{ "rep.movsw.down", rep_movsw, { .ecx = 2, .esi = 6, .edi = 6, .eflags = DF },
	  { .ebx = 0, .edx = 0x48474645, .ecx = 0, .esi = 2, .edi = 2 },
	  R_EBX | R_EDX | R_ECX | R_ESI | R_EDI, 0 },
	{ "rep.movsd", rep_movsd, { .ecx = 2 },
	  { .ebx = 0x44434241, .edx = 0x48474645, .ecx = 0, .esi = 8, .edi = 8 },
	  R_EBX | R_EDX | R_ECX | R_ESI | R_EDI, 0 },
	{ "rep.movsd.down", rep_movsd, { .ecx = 2, .esi = 4, .edi = 4, .eflags = DF },
	  { .ebx = 0x44434241, .edx = 0x48474645, .ecx = 0, .esi = 0xFFFFFFFC,
	    .edi = 0xFFFFFFFC }, R_EBX | R_EDX | R_ECX | R_ESI | R_EDI, 0 },
	{ "rep.stosb", rep_stosb, { .eax = 0x5A, .ecx = 3, .edi = 1 },
	  { .ebx = 0x5A5A5A00, .edx = 0, .ecx = 0, .edi = 4 },
	  R_EBX | R_EDX | R_ECX | R_EDI, 0 },
	{ "rep.stosw.down", rep_stosw, { .eax = 0x1234, .ecx = 2, .edi = 6, .eflags = DF },
	  { .ebx = 0, .edx = 0x12341234, .ecx = 0, .edi = 2 },
	  R_EBX | R_EDX | R_ECX | R_EDI, 0 },
	{ "stosd", stosd, { .eax = 0xDEADBEEF, .ecx = 9, .edi = 4 },
	  { .ebx = 0, .edx = 0xDEADBEEF, .ecx = 9, .edi = 8 },
	  R_EBX | R_EDX | R_ECX | R_EDI, 0 },
	{ "lodsb", lodsb, { .eax = 0xFFFFFF00, .esi = 2 },
	  { .eax = 0xFFFFFF43, .esi = 3 }, R_EAX | R_ESI, 0 },
	{ "lodsw.down", lodsw, { .eax = 0xAAAA0000, .esi = 4, .eflags = DF },
	  { .eax = 0xAAAA4645, .esi = 2 }, R_EAX | R_ESI, 0 },
	{ "rep.lodsd", rep_lodsd, { .ecx = 3 },
	  { .eax = 0x4C4B4A49, .ecx = 0, .esi = 12 }, R_EAX | R_ECX | R_ESI, 0 },
	{ "repe.cmpsb", repe_cmpsb, { .ecx = 16 },
	  { .ecx = 8, .esi = 8, .edi = 8, .eflags = CF | SF | PF },
	  R_ECX | R_ESI | R_EDI, STATUS },
	{ "repe.cmpsb.ecx0", repe_cmpsb, { .ecx = 0, .eflags = CF | ZF },
	  { .ecx = 0, .esi = 0, .edi = 0, .eflags = CF | ZF },
	  R_ECX | R_ESI | R_EDI, STATUS },
	{ "repe.cmpsw", repe_cmpsw, { .ecx = 8 },
	  { .ecx = 4, .esi = 8, .edi = 8, .eflags = CF | SF | PF },
	  R_ECX | R_ESI | R_EDI, STATUS },
	{ "repe.cmpsd.down", repe_cmpsd, { .ecx = 4, .esi = 12, .edi = 12, .eflags = DF },
	  { .ecx = 1, .esi = 0, .edi = 0, .eflags = CF | SF | PF | DF },
	  R_ECX | R_ESI | R_EDI, STATUS | DF },
	{ "repne.cmpsb", repne_cmpsb, { .ecx = 4, .esi = 7, .edi = 7 },
	  { .ecx = 2, .esi = 9, .edi = 9, .eflags = ZF | PF },
	  R_ECX | R_ESI | R_EDI, STATUS },
	{ "repne.scasb", repne_scasb, { .eax = 'K', .ecx = 16 },
	  { .ecx = 5, .edi = 11, .eflags = ZF | PF }, R_ECX | R_EDI, STATUS },
	{ "repe.scasw", repe_scasw, { .eax = 0x4241, .ecx = 4 },
	  { .ecx = 2, .edi = 4, .eflags = CF | SF | AF }, R_ECX | R_EDI, STATUS },
	{ "repne.scasd.down", repne_scasd, { .eax = 0x44434241, .ecx = 5, .edi = 8, .eflags = DF },
	  { .ecx = 2, .edi = 0xFFFFFFFC, .eflags = ZF | PF }, R_ECX | R_EDI, STATUS },

	// Stack and control transfer.
	{ "push.pop32", push_pop32, { .ebx = 0x12345678 },
	  { .ecx = 0x12345678, .esi = 4 }, R_ECX | R_ESI, 0 },
	{ "push.pop16", push_pop16, { .ebx = 0x1234ABCD, .ecx = 0x55550000 },
	  { .ecx = 0x5555ABCD, .esi = 2 }, R_ECX | R_ESI, 0 },
	{ "push.imm8", push_imm8, { .eax = 0 },
	  { .eax = 0xFFFFFFFE }, R_EAX, 0 },
	{ "pushad", pushad, { .edi = 0x77, .esi = 0x66, .ebp = 0x55 },
	  { .eax = 0x77, .ebx = 0x66, .ecx = 0x55, .edx = 32, .ebp = 0x55 },
	  R_EAX | R_EBX | R_ECX | R_EDX | R_EBP, 0 },
	{ "popad", popad, { .eax = 0 },
	  { .eax = 1, .ecx = 2, .edx = 3, .ebx = 4, .ebp = 6, .esi = 7, .edi = 8 },
	  R_EAX | R_EBX | R_ECX | R_EDX | R_ESI | R_EDI | R_EBP, 0 },
	{ "pushfd.popfd", pushfd_popfd, { .ebx = CF | ZF | SF | OF, .ecx = STATUS },
	  { .eax = CF | ZF | SF | OF, .eflags = CF | ZF | SF | OF }, R_EAX, STATUS },
	{ "enter.leave", enter_leave, { .ebp = 0x1234 },
	  { .eax = 16, .esi = 20, .ebp = 0x1234 }, R_EAX | R_ESI | R_EBP, 0 },
	{ "enter.level1", enter1_leave, { .ebp = 0x1234 },
	  { .eax = 12, .edx = 0, .esi = 16, .ebp = 0x1234 },
	  R_EAX | R_EDX | R_ESI | R_EBP, 0 },
	{ "enter16.level2", enter16_level2, { .ebp = 0x1234 },
	  { .ebx = 0xBEEF, .ecx = 10, .esi = 0, .edi = 0 },
	  R_EBX | R_ECX | R_ESI | R_EDI, 0 },
	{ "call.pop", call_pop, { .eax = 0x1111 },
	  { .eax = 0 }, R_EAX, 0 },
	{ "call.ret", call_ret, { .eax = 0 },
	  { .eax = 42, .esi = 0 }, R_EAX | R_ESI, 0 },
	{ "call.ret.imm16", call_ret_imm, { .eax = 0 },
	  { .eax = 16, .esi = 0 }, R_EAX | R_ESI, 0 },
	{ "call.reg", call_reg, { .eax = 0 },
	  { .eax = 7 }, R_EAX, 0 },
	{ "loop", loop, { .ecx = 5 },
	  { .eax = 5, .ecx = 0 }, R_EAX | R_ECX, 0 },
	{ "loope", loope, { .eax = 0, .ecx = 10 },
	  { .eax = 4, .ecx = 6 }, R_EAX | R_ECX, 0 },
	{ "loopne", loopne, { .eax = 0, .ecx = 10 },
	  { .eax = 3, .ecx = 7 }, R_EAX | R_ECX, 0 },
	{ "loopne.exhausted", loopne, { .eax = 0, .ecx = 2 },
	  { .eax = 2, .ecx = 0 }, R_EAX | R_ECX, 0 },
	{ "jecxz.taken", jecxz, { .ecx = 0 },
	  { .eax = 1 }, R_EAX, 0 },
	{ "jecxz.high", jecxz, { .ecx = 0x10000 },
	  { .eax = 2 }, R_EAX, 0 },

	// C-level 64-bit arithmetic and checksums.
	{ "c.mul64", c_mul64,
	  { .edx = 0x01234567, .eax = 0x89ABCDEF, .ecx = 0xFEDCBA98, .ebx = 0x76543210 },
	  { .edx = 0x2236D88F, .eax = 0xE5618CF0 }, R_EAX | R_EDX, 0 },
	{ "c.udivmod64", c_udivmod64,
	  { .edx = 0xFEDCBA98, .eax = 0x76543210, .ecx = 0, .ebx = 0x12345 },
	  { .edx = 0x0000E000, .eax = 0x4FA01C4D, .ecx = 0, .ebx = 0x00010A4F },
	  R_EAX | R_EBX | R_ECX | R_EDX, 0 },
	{ "c.udivmod64.big", c_udivmod64,
	  { .edx = 0xFFFFFFFF, .eax = 0xFFFFFFFF, .ecx = 0x80000000, .ebx = 1 },
	  { .edx = 0, .eax = 1, .ecx = 0x7FFFFFFF, .ebx = 0xFFFFFFFE },
	  R_EAX | R_EBX | R_ECX | R_EDX, 0 },
	{ "c.sdivmod64", c_sdivmod64,
	  { .edx = 0xEDCBA987, .eax = 0x65432110, .ecx = 0, .ebx = 0x1234567 },
	  { .edx = 0xFFFFFFEF, .eax = 0xFFFFF870, .ecx = 0xFFFFFFFF, .ebx = 0xFFFFFC00 },
	  R_EAX | R_EBX | R_ECX | R_EDX, 0 },
	{ "c.shl64", c_shl64, { .edx = 0, .eax = 0x89ABCDEF, .ebx = 40 },
	  { .edx = 0xABCDEF00, .eax = 0 }, R_EAX | R_EDX, 0 },
	{ "c.shr64", c_shr64, { .edx = 0x80000001, .eax = 0, .ebx = 33 },
	  { .edx = 0, .eax = 0x40000000 }, R_EAX | R_EDX, 0 },
	{ "c.sar64", c_sar64, { .edx = 0x80000000, .eax = 0, .ebx = 62 },
	  { .edx = 0xFFFFFFFF, .eax = 0xFFFFFFFE }, R_EAX | R_EDX, 0 },
	{ "c.crc32", c_crc32, { .eax = 0 },
	  { .eax = 0xCBF43926 }, R_EAX, 0 },
	{ "c.adler32", c_adler32, { .eax = 0 },
	  { .eax = 0x5BDC0FDA }, R_EAX, 0 },
};

static const char *const reg_names[] = { "eax", "ebx", "ecx", "edx", "esi", "edi", "ebp" };

static void report_failure(const char *name, const char *what, uint32_t got, uint32_t want)
{
	serial_puts("FAIL ");
	serial_puts(name);
	serial_puts(": got ");
	print_hex32(got);
	serial_puts(" want ");
	print_hex32(want);
	serial_puts(" in ");
	serial_puts(what);
	serial_putc('\n');
}

// Runs one case and prints its line; returns whether it passed.
static int run_case(const struct arith_case *t)
{
	struct cpu c = t->in;

	// Only status flags and DF come from the table: TF, IF, AC and the
	// rest would trap, or are not ours to change.
	c.eflags = (t->in.eflags & (STATUS | DF)) | EFLAGS_FIXED;
	for (unsigned i = 0; i < sizeof scratch; i++)
		scratch[i] = 0;
	t->run(&c);

	for (unsigned r = 0; r < sizeof reg_names / sizeof reg_names[0]; r++) {
		if ((t->regs & 1u << r) && c.reg[r] != t->want.reg[r]) {
			report_failure(t->name, reg_names[r], c.reg[r], t->want.reg[r]);
			return 0;
		}
	}
	if ((c.eflags ^ t->want.eflags) & t->flags) {
		report_failure(t->name, "eflags", c.eflags & t->flags, t->want.eflags & t->flags);
		return 0;
	}
	serial_puts("PASS ");
	serial_puts(t->name);
	serial_putc('\n');
	return 1;
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	int failed = 0;

	(void)magic;
	(void)mbi;
	for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++)
		failed |= !run_case(&cases[i]);
	return failed;
}
