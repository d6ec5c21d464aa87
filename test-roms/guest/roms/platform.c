// rom: start-up probes of a PC guest: real vendor, #UD and #GP where due, MSRs, fw_cfg
// rom-cflags: -fcf-protection=full
//
// Written as a guest for real PCs and QEMU's pc machine is, not for Popek:
// built with -fcf-protection=full, the default of several distributions,
// so every function starts with ENDBR32; then it probes the processor the
// way an OS's start-up code does.  What CPUID reports must work; what it
// does not report must raise #UD (an instruction) or #GP (an MSR), which
// the probe expects and handles.  The line printed is the same whichever
// the answer, so the ROM passes on any processor.
#include "cpu.h"
#include "popek.h"
#include "probe.h"

#define ENDBR32 0xFB1E0FF3u	// F3 0F 1E FB, read as a little-endian dword

#define LEAF_FEATURES 1
#define LEAF_STRUCTURED 7
#define LEAF_EXT_MAX 0x80000000u
#define LEAF_EXT_FEATURES 0x80000001u
#define LEAF_ADDRESS_SIZES 0x80000008u
#define ECX_VMX (1u << 5)
#define ECX_XSAVE (1u << 26)
#define EDX_APIC (1u << 9)
#define EDX_MTRR (1u << 12)
#define EDX_PAT (1u << 16)
#define EXT_ECX_SVM (1u << 2)
#define STRUCTURED_EBX_TSC_ADJUST (1u << 1)
#define STRUCTURED_EBX_INVPCID (1u << 10)
#define SIZES_EBX_RDPRU (1u << 4)

#define MSR_TSC 0x10
#define MSR_APIC_BASE 0x1B
#define MSR_TSC_ADJUST 0x3B
#define MSR_MISC_ENABLE 0x1A0
#define MSR_PAT 0x277
#define MSR_MTRR_DEF_TYPE 0x2FF
#define MSR_UNKNOWN 0x1234	// no processor has it
#define APIC_BASE_ENABLE (1u << 11)
#define APIC_BASE_BSP (1u << 8)
#define PAT_WT_FIRST 0x0007040600070404ull	// entry 0 WT instead of WB
#define PAT_RESERVED_TYPE 2ull	// memory types 2 and 3 are reserved
#define MTRR_DEF_ENABLED_WB 0xC06u	// MTRRs and fixed ranges on, WB

// QEMU's fw_cfg port interface (docs/specs/fw_cfg.rst).
#define FW_CFG_SELECTOR 0x510
#define FW_CFG_DATA 0x511
#define FW_CFG_SIGNATURE 0x0000
#define FW_CFG_ID 0x0001
#define FW_CFG_RAM_SIZE 0x0003
#define FW_CFG_NB_CPUS 0x0005
#define FW_CFG_ID_TRADITIONAL 1u
#define MIB_IN_KIB 1024u

static struct gate32 idt[IDT_VECTORS] __attribute__((aligned(8)));

static int has(uint32_t reg, uint32_t bit)
{
	return (reg & bit) != 0;
}

// The probe ran without a fault.
static int no_fault(void)
{
	return trap32_last.vector == TRAP_NONE;
}

// An instruction the processor may lack: PASS if it has it and insn ran,
// or lacks it and insn raised #UD.
#define PROBE_INSN(name, present, setup, insn)                                \
	do {                                                                  \
		uint32_t at;                                                  \
		TRY(at, setup, insn, "", "m"(scratch));                       \
		if (present)                                                  \
			check_true(name, no_fault(), "reported, but it faulted"); \
		else                                                          \
			check_true(name, raised_ud(at), "not reported, but no #UD"); \
	} while (0)

static uint32_t scratch[4] __attribute__((aligned(16)));

static void check_vendor(void)
{
	struct cpuid v = cpuid(0);
	char name[13];

	__builtin_memcpy(name, &v.ebx, 4);
	__builtin_memcpy(name + 4, &v.edx, 4);
	__builtin_memcpy(name + 8, &v.ecx, 4);
	name[12] = 0;
	int intel = __builtin_memcmp(name, "GenuineIntel", 12) == 0;
	int amd = __builtin_memcmp(name, "AuthenticAMD", 12) == 0;
	check_true("cpuid-vendor-is-a-real-one", intel || amd, name);
}

// -fcf-protection=full put ENDBR32 at every function's entry, and we got
// here through several: the processor ran them as NOPs.  ENDBR64 is one too.
static void check_endbr(void)
{
	uint32_t at, first = *(const volatile uint32_t *)(uintptr_t)check_vendor;

	check_eq("endbr32-opens-each-function", first, ENDBR32);
	TRY(at, "", ".byte 0xf3, 0x0f, 0x1e, 0xfa", "", "m"(scratch));	// ENDBR64
	check_true("endbr64-runs-as-nop", no_fault(), "ENDBR64 faulted");
	(void)at;
}

static void check_instructions(void)
{
	struct cpuid f = cpuid(LEAF_FEATURES);
	uint32_t max = cpuid(0).eax, ext_max = cpuid(LEAF_EXT_MAX).eax;
	struct cpuid s = max >= LEAF_STRUCTURED ? cpuid(LEAF_STRUCTURED) : (struct cpuid){ 0 };
	struct cpuid x = ext_max >= LEAF_EXT_FEATURES ? cpuid(LEAF_EXT_FEATURES) : (struct cpuid){ 0 };
	struct cpuid sz = ext_max >= LEAF_ADDRESS_SIZES ? cpuid(LEAF_ADDRESS_SIZES) : (struct cpuid){ 0 };
	uint32_t at;

	// CR4.OSXSAVE is clear (nobody set it): #UD whether or not XSAVE exists.
	TRY(at, "xor %%ecx, %%ecx", "xgetbv", "", "m"(scratch));
	check_true("xgetbv-without-cr4-osxsave-raises-ud", raised_ud(at),
		   has(f.ecx, ECX_XSAVE) ? "XSAVE reported, no #UD" : "no #UD");
	// INVPCID type 2 (every context, globals too), descriptor in scratch.
	PROBE_INSN("invpcid-as-reported", has(s.ebx, STRUCTURED_EBX_INVPCID),
		   "mov $2, %%eax", "invpcid %1, %%eax");
	PROBE_INSN("rdpru-as-reported", has(sz.ebx, SIZES_EBX_RDPRU),
		   "xor %%ecx, %%ecx", ".byte 0x0f, 0x01, 0xfd");
	// Outside VMX non-root operation VMCALL raises #UD, even with VMX; and
	// VMMCALL outside an SVM guest raises #UD.
	TRY(at, "", "vmcall", "", "m"(scratch));
	check_true("vmcall-outside-a-guest-raises-ud", raised_ud(at),
		   has(f.ecx, ECX_VMX) ? "VMX reported, no #UD" : "no #UD");
	TRY(at, "", "vmmcall", "", "m"(scratch));
	check_true("vmmcall-outside-a-guest-raises-ud", raised_ud(at),
		   has(x.ecx, EXT_ECX_SVM) ? "SVM reported, no #UD" : "no #UD");
}

// RDMSR of `msr` into *v; whether it ran without a fault.
static int try_rdmsr(uint32_t msr, uint64_t *v)
{
	uint32_t at, lo = 0, hi = 0;

	TRY(at, "mov %3, %%ecx", "rdmsr", "mov %%eax, %1; mov %%edx, %2",
	    "m"(lo), "m"(hi), "m"(msr));
	*v = (uint64_t)hi << 32 | lo;
	(void)at;
	return no_fault();
}

// WRMSR of v to `msr`; the vector it raised, or TRAP_NONE.
static uint32_t try_wrmsr(uint32_t msr, uint64_t v)
{
	uint32_t at, lo = (uint32_t)v, hi = (uint32_t)(v >> 32);

	TRY(at, "mov %1, %%ecx; mov %2, %%eax; mov %3, %%edx", "wrmsr", "",
	    "m"(msr), "m"(lo), "m"(hi));
	(void)at;
	return trap32_last.vector;
}

static uint64_t rdtsc64(void)
{
	uint64_t v;

	__asm__ volatile("rdtsc" : "=A"(v));
	return v;
}

static void check_msrs(void)
{
	struct cpuid f = cpuid(LEAF_FEATURES);
	uint32_t max = cpuid(0).eax;
	struct cpuid s = max >= LEAF_STRUCTURED ? cpuid(LEAF_STRUCTURED) : (struct cpuid){ 0 };
	uint64_t v, base;

	check_true("msr-misc-enable-reads", try_rdmsr(MSR_MISC_ENABLE, &v), "#GP");
	if (has(f.edx, EDX_APIC)) {
		int ok = try_rdmsr(MSR_APIC_BASE, &base);
		check_true("msr-apic-base-enabled-bsp",
			   ok && (base & (APIC_BASE_ENABLE | APIC_BASE_BSP)) ==
			   (APIC_BASE_ENABLE | APIC_BASE_BSP), "not enabled");
		check_true("msr-apic-base-rewrite", try_wrmsr(MSR_APIC_BASE, base) == TRAP_NONE,
			   "writing it back faulted");
	}
	// The counter moves to what was written and counts on from there.
	uint64_t target = 1ull << 40;
	uint32_t fault = try_wrmsr(MSR_TSC, target);
	uint64_t now = rdtsc64();
	check_true("msr-tsc-write-moves-the-counter",
		   fault == TRAP_NONE && now >= target && now - target < (1ull << 32),
		   "RDTSC did not follow");
	if (has(s.ebx, STRUCTURED_EBX_TSC_ADJUST)) {
		int ok = try_rdmsr(MSR_TSC_ADJUST, &v) && try_wrmsr(MSR_TSC_ADJUST, 0) == TRAP_NONE;
		now = rdtsc64();
		check_true("msr-tsc-adjust-as-reported", ok && now < target, "not moved back");
	} else {
		check_true("msr-tsc-adjust-as-reported", 1, "");
	}
	if (has(f.edx, EDX_PAT)) {
		int ok = try_wrmsr(MSR_PAT, PAT_WT_FIRST) == TRAP_NONE && try_rdmsr(MSR_PAT, &v);
		check_true("msr-pat-round-trips", ok && v == PAT_WT_FIRST, "not kept");
		check_true("msr-pat-reserved-type-raises-gp",
			   try_wrmsr(MSR_PAT, PAT_RESERVED_TYPE) == VEC_GP, "no #GP");
	}
	if (has(f.edx, EDX_MTRR)) {
		int ok = try_wrmsr(MSR_MTRR_DEF_TYPE, MTRR_DEF_ENABLED_WB) == TRAP_NONE &&
			 try_rdmsr(MSR_MTRR_DEF_TYPE, &v);
		check_true("msr-mtrr-def-type-round-trips", ok && v == MTRR_DEF_ENABLED_WB,
			   "not kept");
	}
	check_true("msr-unknown-raises-gp", !try_rdmsr(MSR_UNKNOWN, &v) &&
		   trap32_last.vector == VEC_GP, "no #GP");
}

// The first `len` bytes of fw_cfg item `key`, little-endian, as a number.
static uint64_t fw_cfg_read(uint16_t key, unsigned len)
{
	uint64_t v = 0;

	__asm__ volatile("outw %0, %1" : : "a"(key), "Nd"((uint16_t)FW_CFG_SELECTOR));
	for (unsigned i = 0; i < len; i++)
		v |= (uint64_t)inb(FW_CFG_DATA) << (8 * i);
	return v;
}

// What a guest written for QEMU reads before it starts other processors.
static void check_fw_cfg(const struct multiboot_info *mbi)
{
	// What Multiboot reports as memory: QEMU keeps 128 KiB at the top for itself.
	uint64_t ram = (uint64_t)(mbi->mem_upper + MIB_IN_KIB) * 1024;

	if (!check_eq("fw-cfg-signature", (uint32_t)fw_cfg_read(FW_CFG_SIGNATURE, 4),
		      0x554D4551u))	// "QEMU"
		return;
	check_true("fw-cfg-port-interface", fw_cfg_read(FW_CFG_ID, 4) & FW_CFG_ID_TRADITIONAL,
		   "ID bit 0 clear");
	check_eq("fw-cfg-one-cpu", (uint32_t)fw_cfg_read(FW_CFG_NB_CPUS, 2), 1);
	uint64_t size = fw_cfg_read(FW_CFG_RAM_SIZE, 8);
	check_true("fw-cfg-ram-size-covers-multiboot", size >= ram && size - ram < MIB_IN_KIB * 1024,
		   "not the Multiboot memory size, give or take 1 MiB");
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	(void)magic;
	gdt_init(0, 0);
	trap32_install(idt);
	trap32_handler = trap32_record;

	check_endbr();
	check_vendor();
	check_instructions();
	check_msrs();
	check_fw_cfg(mbi);
	return check_failures ? 1 : 0;
}
