// rom: decimal arithmetic (DAA DAS AAA AAS AAM AAD) and SALC against the SDM
//
// Runs each decimal-adjust instruction, and SALC, on every AL with a few AH
// values, AF and CF clear and set, and the other status flags clear and set,
// and compares EAX and the flags the Intel SDM defines for the instruction
// with the SDM's pseudo-code, written out below in C.  The flags the SDM
// leaves undefined differ between processors (this host's AMD CPU and QEMU
// disagree on DAA's OF, for one) and are not compared.  One PASS line per
// instruction, or a FAIL line naming the first input that differs.
//
// Then AAM with a zero base, which raises #DE (a fault: nothing changes).
// (INT1 is checked by Popek's own tests only: QEMU 7.2 raises #UD for it,
// where the SDM has a #DB trap.)
#include "cpu.h"
#include "popek.h"

#define UPPER_EAX 0x12340000	// must survive every instruction

// One instruction under test: runs it with EAX and EFLAGS as given and
// returns EAX, storing the EFLAGS it left in *flags.
typedef uint32_t (*runner)(uint32_t eax, uint32_t *flags);

#define RUNNER(fn, insn)                                                      \
	static uint32_t fn(uint32_t eax, uint32_t *flags)                     \
	{                                                                     \
		uint32_t out;                                                 \
		__asm__ volatile("push %2; popf\n\t" insn "\n\tpushf; pop %1" \
				 : "+a"(eax), "=r"(out)                       \
				 : "r"(*flags)                                \
				 : "cc");                                     \
		*flags = out;                                                 \
		return eax;                                                   \
	}
RUNNER(run_daa, "daa")
RUNNER(run_das, "das")
RUNNER(run_aaa, "aaa")
RUNNER(run_aas, "aas")
RUNNER(run_aam10, "aam")
RUNNER(run_aam7, "aam $7")
RUNNER(run_aad10, "aad")
RUNNER(run_aad7, "aad $7")
// The assembler knows SALC under no name.
RUNNER(run_salc, ".byte 0xd6")

// ---- The SDM's pseudo-code ----

struct regs {
	uint8_t al, ah;
	int af, cf;
	uint32_t eflags;	// as the instruction found it
};

// SF, ZF and PF of a byte result.
static uint32_t szp(uint8_t v)
{
	unsigned ones = 0;

	for (uint8_t b = v; b; b >>= 1)
		ones += b & 1;
	return (v & 0x80 ? FL_SF : 0) | (v ? 0 : FL_ZF) | (ones % 2 ? 0 : FL_PF);
}

static uint32_t af_cf(const struct regs *r)
{
	return (r->af ? FL_AF : 0) | (r->cf ? FL_CF : 0);
}

static uint32_t model_daa(struct regs *r)
{
	uint8_t old_al = r->al;
	int old_cf = r->cf;

	r->cf = 0;
	if ((r->al & 0x0F) > 9 || r->af) {
		int carry = r->al + 6 > 0xFF;

		r->al += 6;
		r->cf = old_cf || carry;
		r->af = 1;
	} else {
		r->af = 0;
	}
	if (old_al > 0x99 || old_cf) {
		r->al += 0x60;
		r->cf = 1;
	} else {
		r->cf = 0;
	}
	return af_cf(r) | szp(r->al);
}

static uint32_t model_das(struct regs *r)
{
	uint8_t old_al = r->al;
	int old_cf = r->cf;

	r->cf = 0;
	if ((r->al & 0x0F) > 9 || r->af) {
		int borrow = r->al < 6;

		r->al -= 6;
		r->cf = old_cf || borrow;
		r->af = 1;
	} else {
		r->af = 0;
	}
	if (old_al > 0x99 || old_cf) {
		r->al -= 0x60;
		r->cf = 1;
	}
	return af_cf(r) | szp(r->al);
}

static uint32_t model_aaa(struct regs *r)
{
	if ((r->al & 0x0F) > 9 || r->af) {
		uint16_t ax = (uint16_t)(r->ah << 8 | r->al) + 0x106;

		r->al = (uint8_t)ax;
		r->ah = (uint8_t)(ax >> 8);
		r->af = r->cf = 1;
	} else {
		r->af = r->cf = 0;
	}
	r->al &= 0x0F;
	return af_cf(r);
}

static uint32_t model_aas(struct regs *r)
{
	if ((r->al & 0x0F) > 9 || r->af) {
		uint16_t ax = (uint16_t)(r->ah << 8 | r->al) - 6;

		r->al = (uint8_t)ax;
		r->ah = (uint8_t)((ax >> 8) - 1);
		r->af = r->cf = 1;
	} else {
		r->af = r->cf = 0;
	}
	r->al &= 0x0F;
	return af_cf(r);
}

static uint32_t aam(struct regs *r, uint8_t base)
{
	r->ah = r->al / base;
	r->al = r->al % base;
	return szp(r->al);
}

static uint32_t aad(struct regs *r, uint8_t base)
{
	r->al = (uint8_t)(r->al + r->ah * base);
	r->ah = 0;
	return szp(r->al);
}

static uint32_t model_aam10(struct regs *r) { return aam(r, 10); }
static uint32_t model_aam7(struct regs *r) { return aam(r, 7); }
static uint32_t model_aad10(struct regs *r) { return aad(r, 10); }
static uint32_t model_aad7(struct regs *r) { return aad(r, 7); }

// SALC changes no flag: they all come out as they went in.
static uint32_t model_salc(struct regs *r)
{
	r->al = r->cf ? 0xFF : 0;
	return r->eflags;
}

static const struct instruction {
	const char *name;
	runner run;
	uint32_t (*model)(struct regs *r);	// the defined flags it sets
	uint32_t defined;			// which flags the SDM defines
} instructions[] = {
	{ "daa", run_daa, model_daa, FL_CF | FL_AF | FL_SF | FL_ZF | FL_PF },
	{ "das", run_das, model_das, FL_CF | FL_AF | FL_SF | FL_ZF | FL_PF },
	{ "aaa", run_aaa, model_aaa, FL_CF | FL_AF },
	{ "aas", run_aas, model_aas, FL_CF | FL_AF },
	{ "aam", run_aam10, model_aam10, FL_SF | FL_ZF | FL_PF },
	{ "aam-7", run_aam7, model_aam7, FL_SF | FL_ZF | FL_PF },
	{ "aad", run_aad10, model_aad10, FL_SF | FL_ZF | FL_PF },
	{ "aad-7", run_aad7, model_aad7, FL_SF | FL_ZF | FL_PF },
	{ "salc", run_salc, model_salc, FL_STATUS },
};

static const uint8_t ah_values[] = { 0x00, 0x12, 0x7F, 0xFF };
// The other status flags: all clear or all set.
static const uint32_t others[] = { 0, FL_OF | FL_SF | FL_ZF | FL_PF };

static void check_instruction(const struct instruction *in)
{
	char name[16] = "bcd.";

	for (unsigned i = 0; in->name[i]; i++)
		name[4 + i] = in->name[i];
	for (unsigned a = 0; a < sizeof ah_values; a++)
		for (unsigned al = 0; al < 256; al++)
			for (unsigned f = 0; f < 8; f++) {
				struct regs r = { (uint8_t)al, ah_values[a], f & 1, f >> 1 & 1, 0 };
				uint32_t flags = FL_FIXED | others[f >> 2] | af_cf(&r);
				uint32_t eax = UPPER_EAX | (uint32_t)r.ah << 8 | r.al;
				uint32_t got_flags = flags;
				uint32_t got = in->run(eax, &got_flags);
				uint32_t want_flags, want;

				r.eflags = flags;
				want_flags = in->model(&r) & in->defined;
				want = UPPER_EAX | (uint32_t)r.ah << 8 | r.al;
				if (got == want && (got_flags & in->defined) == want_flags)
					continue;
				serial_puts("FAIL ");
				serial_puts(name);
				serial_puts(": eax ");
				print_hex32(eax);
				serial_puts(" eflags ");
				print_hex32(flags);
				serial_puts(" gave eax ");
				print_hex32(got);
				serial_puts(" eflags ");
				print_hex32(got_flags);
				serial_puts(", want eax ");
				print_hex32(want);
				serial_puts(" flags ");
				print_hex32(want_flags);
				serial_puts(" of ");
				print_hex32(in->defined);
				serial_putc('\n');
				check_failures++;
				return;
			}
	check_true(name, 1, 0);
}

// ---- Exceptions ----

static struct gate32 idt[IDT_VECTORS] __attribute__((aligned(8)));

// Runs insn (with EAX = eax and EDI = the address after it) expecting an
// exception; returns EAX as the handler resumed.
#define RAISING(insn, eax)                                                    \
	({                                                                    \
		uint32_t eax_ = (eax);                                        \
		trap32_last.vector = TRAP_NONE;                               \
		__asm__ volatile("mov $1f, %%edi\n\t" insn "\n1:"              \
				 : "+a"(eax_)                                 \
				 :                                            \
				 : "ecx", "edx", "edi", "memory", "cc");      \
		eax_;                                                         \
	})

extern const char aam0_insn[];

static void check_exceptions(void)
{
	uint32_t eax = RAISING(".globl aam0_insn\naam0_insn: aam $0", 0x1234);

	check_field("aam-0-raises-de", "vector", trap32_last.vector, VEC_DE);
	check_field("aam-0-is-a-fault", "eip", trap32_last.eip, (uint32_t)(uintptr_t)aam0_insn);
	check_eq("aam-0-changes-nothing", eax, 0x1234);
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;
	for (unsigned i = 0; i < sizeof instructions / sizeof instructions[0]; i++)
		check_instruction(&instructions[i]);
	gdt_init(0, 0);
	trap32_install(idt);
	trap32_handler = trap32_record;
	check_exceptions();
	return check_failures ? 1 : 0;
}
