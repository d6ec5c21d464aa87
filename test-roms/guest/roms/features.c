// rom: what CPUID does not report raises #UD; LES/LDS/BOUND with a register; hints
//
// A processor has the instructions its CPUID reports.  For each feature
// below the ROM asks CPUID, then runs an instruction of it: where the
// feature is reported the instruction must work (its result is checked),
// where it is not it must raise #UD.  The line printed is the same either
// way, so the ROM passes on any processor, Popek's included.
//
// Outside 64-bit mode C4, C5 and 62 are LES, LDS and BOUND; with a register
// operand (ModRM mod = 11) they raise #UD, or on processors with AVX they
// are VEX and EVEX prefixes of instructions that raise #UD with CR4.OSXSAVE
// clear, as here.  Their memory forms load far pointers and check bounds.
//
// The hint space (0F 0D, 0F 18 to 0F 1F) runs as NOP on a processor that
// lacks the hint: the long NOPs, ENDBR32, the prefetches, CLDEMOTE.
//
// (RTM's XABORT is left to Popek's own tests: QEMU 7.2 runs C6 F8 ib as
// MOV AL, imm8, where the SDM has #UD without RTM.)
#include "cpu.h"
#include "popek.h"
#include "probe.h"

#define CR4_OSFXSR 0x200	// SSE instructions enabled

// CPUID leaf 1 feature bits.
#define ECX_SSE3 (1u << 0)
#define ECX_SSSE3 (1u << 9)
#define ECX_POPCNT (1u << 23)
#define EDX_CLFSH (1u << 19)
#define EDX_MMX (1u << 23)
#define LEAF_FEATURES 1

static struct gate32 idt[IDT_VECTORS] __attribute__((aligned(8)));

// PASS when the feature is absent and the instruction raised #UD, or
// present and it worked (no exception, and `worked`).
static void check_feature(const char *name, int present, uint32_t at, int worked)
{
	if (present)
		check_true(name, trap32_last.vector == TRAP_NONE && worked,
			   "the feature is reported but the instruction failed");
	else
		check_true(name, raised_ud(at), "the feature is absent but no #UD");
}

static uint64_t mmx_a = 0x0102030405060708ull, mmx_b = 0x1010101010101010ull, mmx_sum;
static uint8_t xmm_in[16] __attribute__((aligned(16))), xmm_out[16] __attribute__((aligned(16)));

static void check_mmx(int present)
{
	uint32_t at;

	TRY(at, "", "movq %1, %%mm0", "paddb %2, %%mm0; movq %%mm0, %3; emms",
	    "m"(mmx_a), "m"(mmx_b), "m"(mmx_sum));
	check_feature("mmx-paddb", present, at, mmx_sum == 0x1112131415161718ull);
}

static void check_sse3(int present)
{
	uint32_t at;

	// MOVDDUP: the low quadword, twice.
	TRY(at, "", "movddup %1, %%xmm0", "movdqu %%xmm0, %2", "m"(xmm_in), "m"(xmm_out));
	check_feature("sse3-movddup", present, at, xmm_out[8] == 0 && xmm_out[15] == 7);
}

static void check_ssse3(int present)
{
	uint32_t at;

	// PSHUFB with an all-zero control: every byte becomes byte 0 (here 0).
	TRY(at, "movdqu %1, %%xmm0; pxor %%xmm1, %%xmm1",
	    "pshufb %%xmm1, %%xmm0", "movdqu %%xmm0, %2", "m"(xmm_in), "m"(xmm_out));
	check_feature("ssse3-pshufb", present, at, xmm_out[0] == 0 && xmm_out[15] == 0);
}

static void check_popcnt(int present)
{
	uint32_t at, count = 0;

	TRY(at, "mov $0xF0F0, %%eax", "popcnt %%eax, %%eax", "mov %%eax, %1", "m"(count));
	check_feature("popcnt", present, at, count == 8);
}

static void check_clflush(int present)
{
	uint32_t at;

	TRY(at, "", "clflush %1", "", "m"(mmx_a));
	check_feature("clflush", present, at, 1);
}

// C5 C0, C4 C0 and 62 C0, each followed by bytes that would complete a VEX
// or EVEX instruction: one #UD at the first byte.
static void check_register_forms(void)
{
	uint32_t at;

	TRY(at, "", ".byte 0xc5, 0xc0, 0x58, 0xc0", "", "m"(mmx_a));
	check_true("lds-register-raises-ud", raised_ud(at), "no #UD at the LDS");
	TRY(at, "", ".byte 0xc4, 0xc0, 0x58, 0xc0", "", "m"(mmx_a));
	check_true("les-register-raises-ud", raised_ud(at), "no #UD at the LES");
	TRY(at, "", ".byte 0x62, 0xc0, 0x58, 0xc0", "", "m"(mmx_a));
	check_true("bound-register-raises-ud", raised_ud(at), "no #UD at the BOUND");
}

// LDS and LES with a memory operand load a far pointer; BOUND with an index
// inside its bounds does nothing.
static void check_memory_forms(void)
{
	static const struct {
		uint32_t offset;
		uint16_t selector;
	} __attribute__((packed)) far = { 0x12345678, SEL_KDATA };
	static const int32_t bounds[2] = { -5, 5 };
	uint32_t eax, ebx;
	uint16_t ds, es;

	trap32_last.vector = TRAP_NONE;
	__asm__ volatile("push %%ds\n\t"
			 "lds %4, %0\n\t"
			 "mov %%ds, %2\n\t"
			 "pop %%ds\n\t"
			 "les %4, %1\n\t"
			 "mov %%es, %3\n\t"
			 "mov $3, %%ecx\n\t"
			 "bound %%ecx, %5"
			 : "=&r"(eax), "=&r"(ebx), "=&r"(ds), "=&r"(es)
			 : "m"(far), "m"(bounds)
			 : "ecx", "memory");
	check_true("lds-les-memory", eax == far.offset && ebx == far.offset &&
		   ds == SEL_KDATA && es == SEL_KDATA, "wrong pointer loaded");
	check_true("bound-memory", trap32_last.vector == TRAP_NONE, "BOUND faulted");
}

// Hints run as NOP where the processor lacks them: none may fault.
static void check_hints(void)
{
	uint32_t at;

	TRY(at, "",
	    "nopl (%%eax)", // 0F 1F /0, the long NOP
	    ".byte 0x0f, 0x19, 0x00\n\t" // 0F 19: a reserved NOP
	    ".byte 0xf3, 0x0f, 0x1e, 0xfb\n\t" // ENDBR32
	    ".byte 0x0f, 0x1c, 0x00\n\t" // CLDEMOTE [eax]
	    "prefetchnta %1\n\t"
	    "prefetchw %1",
	    "m"(mmx_a));
	check_true("hints-run-as-nop", trap32_last.vector == TRAP_NONE, "a hint faulted");
	(void)at;
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	struct cpuid f = cpuid(LEAF_FEATURES);

	(void)magic;
	(void)mbi;
	gdt_init(0, 0);
	trap32_install(idt);
	trap32_handler = trap32_record;
	for (unsigned i = 0; i < sizeof xmm_in; i++)
		xmm_in[i] = (uint8_t)i;
	// SSE instructions raise #UD without CR4.OSFXSR whatever CPUID says.
	write_cr4(read_cr4() | CR4_OSFXSR);

	check_mmx(!!(f.edx & EDX_MMX));
	check_sse3(!!(f.ecx & ECX_SSE3));
	check_ssse3(!!(f.ecx & ECX_SSSE3));
	check_popcnt(!!(f.ecx & ECX_POPCNT));
	check_clflush(!!(f.edx & EDX_CLFSH));
	check_register_forms();
	check_memory_forms();
	check_hints();
	return check_failures ? 1 : 0;
}
