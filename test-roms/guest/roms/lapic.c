// rom: the local APIC: self-IPIs by priority, TPR, EOI, one-shot and periodic timer
//
// Drives the processor's local APIC (xAPIC, at IA32_APIC_BASE) the way an
// OS does at boot: software-enable it through the spurious-interrupt vector
// register, send interrupts to itself through the ICR, let the task
// priority hold some back, end each with an EOI, and run the LVT timer in
// one-shot and periodic modes.  The 8259As stay masked: every interrupt
// here comes from the APIC.  Only PASS/FAIL lines are printed (no counts:
// time runs at another speed on every machine), and every wait is bounded.
#include "cpu.h"
#include "popek.h"
#include "probe.h"
#include "pc.h"

#define EDX_APIC (1u << 9)
#define MSR_APIC_BASE 0x1B
#define APIC_BASE_ENABLE (1u << 11)
#define APIC_BASE_FRAME 0xFFFFF000u

// Register offsets (Intel SDM Vol. 3A, table 11-1).
#define APIC_VERSION 0x30
#define APIC_TPR 0x80
#define APIC_PPR 0xA0
#define APIC_EOI 0xB0
#define APIC_SVR 0xF0
#define APIC_ISR 0x100
#define APIC_IRR 0x200
#define APIC_ICR_LOW 0x300
#define APIC_LVT_TIMER 0x320
#define APIC_TIMER_INITIAL 0x380
#define APIC_TIMER_CURRENT 0x390
#define APIC_TIMER_DIVIDE 0x3E0

#define SVR_ENABLE (1u << 8)
#define SPURIOUS_VECTOR 0xFF
#define LVT_MASKED (1u << 16)
#define TIMER_PERIODIC (1u << 17)
#define DIVIDE_BY_1 0xB
#define ICR_SELF (1u << 18)	// destination shorthand: self
#define VERSION_INTEGRATED 0x10	// versions 0x10-0x15: an integrated APIC

#define VEC_LOW 0x41		// class 4
#define VEC_MID 0x52		// class 5
#define VEC_HIGH 0x63		// class 6
#define VEC_TIMER 0x70
#define TIMER_ONE_SHOT_COUNT 200000	// 200 us at a 1 GHz bus clock
#define TIMER_PERIOD 10000000	// 10 ms: no tick lost to host jitter under QEMU
#define PERIODIC_TICKS 5
#define MAX_SPINS 50000000u	// bounds every wait even if no interrupt comes
#define MAX_SEEN 8

static struct gate32 idt[IDT_VECTORS] __attribute__((aligned(8)));
static volatile uint32_t *apic;
static volatile uint8_t seen[MAX_SEEN];
static volatile uint32_t seen_count, ppr_in_handler, isr_in_handler;

static uint32_t reg(uint32_t offset)
{
	return apic[offset / 4];
}

static void set_reg(uint32_t offset, uint32_t v)
{
	apic[offset / 4] = v;
}

// Whether vector v's bit is set in the 256-bit register at `offset`.
static int bit(uint32_t offset, uint8_t v)
{
	return (reg(offset + (v / 32) * 0x10) >> (v % 32)) & 1;
}

static void on_trap(struct trap_frame *f)
{
	if (f->vector < VEC_FIRST_IRQ)
		trap32_unexpected(f);
	if (seen_count < MAX_SEEN)
		seen[seen_count] = (uint8_t)f->vector;
	if (seen_count == 0) {
		ppr_in_handler = reg(APIC_PPR);
		isr_in_handler = bit(APIC_ISR, (uint8_t)f->vector);
	}
	seen_count++;
	set_reg(APIC_EOI, 0);
}

static void reset_seen(void)
{
	seen_count = 0;
	for (unsigned i = 0; i < MAX_SEEN; i++)
		seen[i] = 0;
}

// Opens the interrupt window for exactly one instruction.
static void window(void)
{
	__asm__ volatile("sti; nop; cli" : : : "memory");
}

static void self_ipi(uint8_t vector)
{
	set_reg(APIC_ICR_LOW, ICR_SELF | vector);
}

static int find_apic(void)
{
	struct cpuid f = cpuid(1);

	if (!check_true("apic-reported", f.edx & EDX_APIC, "CPUID.1:EDX.APIC clear"))
		return 0;
	uint64_t base = rdmsr(MSR_APIC_BASE);
	check_true("apic-globally-enabled", base & APIC_BASE_ENABLE, "IA32_APIC_BASE.EN clear");
	apic = (volatile uint32_t *)(uintptr_t)(base & APIC_BASE_FRAME);
	uint32_t version = reg(APIC_VERSION);
	return check_true("apic-version-integrated",
			  (version & 0xF0) == VERSION_INTEGRATED && (version >> 16 & 0xFF) >= 3,
			  "not an integrated APIC with a timer LVT");
}

static void check_self_ipis(void)
{
	reset_seen();
	self_ipi(VEC_MID);
	check_true("ipi-self-waits-in-irr", bit(APIC_IRR, VEC_MID) && seen_count == 0,
		   "IRR bit not set, or delivered with IF clear");
	window();
	check_true("ipi-self-delivered", seen_count == 1 && seen[0] == VEC_MID,
		   "not delivered when IF was set");
	check_true("isr-set-while-in-service", isr_in_handler, "ISR bit clear in the handler");
	check_eq("ppr-is-the-class-in-service", ppr_in_handler & 0xF0, VEC_MID & 0xF0);
	check_true("eoi-clears-isr", !bit(APIC_ISR, VEC_MID), "ISR bit still set");

	// Requested in rising order, served from the highest class down.
	reset_seen();
	self_ipi(VEC_LOW);
	self_ipi(VEC_HIGH);
	self_ipi(VEC_MID);
	window();
	check_true("ipis-served-by-priority",
		   seen_count == 3 && seen[0] == VEC_HIGH && seen[1] == VEC_MID &&
		   seen[2] == VEC_LOW, "wrong order");

	// A task priority of class 5 holds classes 5 and below back.
	reset_seen();
	set_reg(APIC_TPR, 0x50);
	self_ipi(VEC_MID);
	self_ipi(VEC_HIGH);
	window();
	check_true("tpr-holds-back-lower-classes", seen_count == 1 && seen[0] == VEC_HIGH,
		   "TPR not honoured");
	set_reg(APIC_TPR, 0);
	window();
	check_true("tpr-lowered-lets-them-in", seen_count == 2 && seen[1] == VEC_MID,
		   "the held-back vector did not come");
}

static void check_timer(void)
{
	set_reg(APIC_TIMER_DIVIDE, DIVIDE_BY_1);

	// A masked timer counts down without interrupting.
	reset_seen();
	set_reg(APIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
	set_reg(APIC_TIMER_INITIAL, 0xFFFFFFFF);
	uint32_t first = reg(APIC_TIMER_CURRENT), next = first;
	for (unsigned n = 0; next == first && n < MAX_SPINS; n++)
		next = reg(APIC_TIMER_CURRENT);
	check_true("timer-counts-down", next < first, "the current count did not fall");

	// One shot: one interrupt, then the count stays at zero.
	set_reg(APIC_LVT_TIMER, VEC_TIMER);
	set_reg(APIC_TIMER_INITIAL, TIMER_ONE_SHOT_COUNT);
	sti();
	for (unsigned n = 0; seen_count == 0 && n < MAX_SPINS; n++)
		;
	cli();
	check_true("timer-one-shot-fires", seen_count == 1 && seen[0] == VEC_TIMER,
		   "no timer interrupt");
	check_eq("timer-one-shot-ends-at-zero", reg(APIC_TIMER_CURRENT), 0);

	// Periodic: each STI;HLT sleeps until exactly one tick.
	reset_seen();
	set_reg(APIC_LVT_TIMER, TIMER_PERIODIC | VEC_TIMER);
	set_reg(APIC_TIMER_INITIAL, TIMER_PERIOD);
	uint32_t halts = 0;
	while (seen_count < PERIODIC_TICKS && halts < 2 * PERIODIC_TICKS) {
		__asm__ volatile("sti; hlt; cli" : : : "memory");
		halts++;
	}
	set_reg(APIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
	set_reg(APIC_TIMER_INITIAL, 0);
	check_eq("timer-periodic-wakes-hlt", halts, PERIODIC_TICKS);
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;
	gdt_init(0, 0);
	trap32_install(idt);
	trap32_handler = on_trap;
	pic_set_masks(PIC_MASK_ALL, PIC_MASK_ALL);

	if (find_apic()) {
		set_reg(APIC_SVR, SVR_ENABLE | SPURIOUS_VECTOR);
		check_self_ipis();
		check_timer();
		set_reg(APIC_SVR, SPURIOUS_VECTOR);
	}
	return check_failures ? 1 : 0;
}
