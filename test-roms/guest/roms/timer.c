// rom: PIT and PIC: timer IRQs wake HLT, interrupt busy loops, wait for STI
//
// Sets up the PC's timer hardware the way an OS does: the two 8259A PICs
// remapped so IRQs 0-15 raise vectors 0x20-0x2F (the BIOS leaves them on
// top of the CPU exceptions), every IRQ but the timer masked, and PIT
// channel 0 as a 100 Hz rate generator.  The IRQ 0 handler counts ticks.
//
// Time passes at a different speed on every machine, so the ROM prints
// only PASS/FAIL lines and never a count; every wait is bounded by PIT
// periods, not by loop iterations, so it stays short under slow emulation.
#include "cpu.h"
#include "pc.h"
#include "popek.h"

#define TIMER_HZ 100
#define PIT_DIVISOR ((PIT_HZ + TIMER_HZ / 2) / TIMER_HZ)	// 11932
#define MASTER_VECTORS VEC_FIRST_IRQ		// IRQs 0-7: vectors 0x20-0x27
#define SLAVE_VECTORS (VEC_FIRST_IRQ + PIC_LINES)	// IRQs 8-15: 0x28-0x2F
#define TIMER_VECTOR (MASTER_VECTORS + IRQ_TIMER)
#define TIMER_BIT (1u << IRQ_TIMER)

#define HLT_TICKS 5		// ticks to sleep through with HLT
#define GIVE_UP_PERIODS 10	// a tick is this many PIT periods late: FAIL
#define MAX_PIT_READS 1000000	// bounds every wait even if the PIT is broken
#define SPIN_CHUNK 100		// busy-loop iterations between PIT reads
#define MAX_SPIN_ROUNDS 100000	// and the busy loop, at >= 200 ms on hardware
#define COUNT_TRIES 3		// reads that may straddle a PIT reload

static struct gate32 idt[IDT_VECTORS] __attribute__((aligned(8)));
static volatile uint32_t ticks;

static void on_trap(struct trap_frame *f)
{
	if (f->vector != TIMER_VECTOR)
		trap32_unexpected(f);
	ticks++;
	pic_eoi_master();	// or the PIC delivers no further IRQ 0
}

// In mode 2 the count runs from the divisor down to 1, then reloads: two
// different successive reads decrease, unless a reload fell between them.
static void check_pit_counts_down(void)
{
	const char *why = "the count never changed";

	for (unsigned try = 0; try < COUNT_TRIES; try++) {
		uint16_t first = pit_read_count(), next = first;

		for (unsigned n = 0; next == first && n < MAX_PIT_READS; n++)
			next = pit_read_count();
		if (next == first)
			break;
		if (next < first) {
			why = 0;
			break;
		}
		why = "the count went up";
	}
	check_true("pit-counts-down", !why, why);
}

// With IF clear, IRQ 0 must wait in the PIC (its bit set in the IRR) and
// not reach the CPU; STI must then let it in after the next instruction.
static void check_cli_blocks_irq(void)
{
	struct pit_watch w;
	unsigned reads = 0;
	int pending = 0;

	// Multiboot entered us with IF clear, and nothing has set it since.
	pit_watch_start(&w);
	while (w.reloads == 0 && reads++ < MAX_PIT_READS)
		pit_watch_poll(&w);
	// The reload raised IRQ 0: wait for the PIC to show it.
	while (!pending && reads++ < MAX_PIT_READS)
		pending = pic_master_irr() & TIMER_BIT;
	uint32_t taken = ticks;

	check_true("cli-blocks-irq", w.reloads && pending && !taken,
		   !w.reloads ? "the PIT count never reloaded" :
		   !pending ? "IRQ 0 never became pending in the PIC" :
		   "an interrupt was taken with IF clear");

	// STI delays interrupts by one instruction, so the pending IRQ is
	// taken after the NOP and before the CLI.
	__asm__ volatile("sti; nop; cli" : : : "memory");
	check_true("pending-irq-after-sti", ticks != taken,
		   "the pending IRQ 0 was not taken between STI;NOP and CLI");
}

// A tight loop that only reads memory makes no I/O and no other exits:
// the emulator or VMM must still stop it to deliver the interrupt.
static int check_busy_loop_interrupted(void)
{
	struct pit_watch w;
	unsigned rounds = 0;
	uint32_t start = ticks;

	sti();
	pit_watch_start(&w);
	while (ticks == start && w.reloads < GIVE_UP_PERIODS &&
	       rounds++ < MAX_SPIN_ROUNDS) {
		for (unsigned n = 0; n < SPIN_CHUNK && ticks == start; n++)
			;
		pit_watch_poll(&w);
	}
	cli();
	return check_true("busy-loop-interrupted", ticks != start,
			  "no timer interrupt for many PIT periods");
}

// Each STI;HLT must sleep until exactly one tick wakes it: with only IRQ 0
// unmasked, a HLT that returned early would show up as extra rounds.
// Tried only when ticks are known to keep coming, or HLT would never wake.
static void check_hlt_wakes(int ticks_flow)
{
	if (!ticks_flow) {
		check_true("hlt-wakes-on-timer", 0,
			   "not tried: timer interrupts do not keep arriving");
		return;
	}
	uint32_t target = ticks + HLT_TICKS;
	uint32_t halts = 0;

	// STI's one-instruction delay makes STI;HLT atomic: a tick cannot
	// slip in between the test and the HLT and leave it asleep.
	while (ticks < target) {
		__asm__ volatile("sti; hlt; cli" : : : "memory");
		halts++;
	}
	check_eq("hlt-wakes-on-timer", halts, HLT_TICKS);
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;
	gdt_init(0, 0);		// our own CS selector for the IDT gates
	trap32_install(idt);
	trap32_handler = on_trap;
	pic_remap(MASTER_VECTORS, SLAVE_VECTORS);
	pit_start_rate(PIT_DIVISOR);
	pic_set_masks((uint8_t)~TIMER_BIT, PIC_MASK_ALL);

	check_pit_counts_down();
	check_cli_blocks_irq();
	check_hlt_wakes(check_busy_loop_interrupted());

	pic_set_masks(PIC_MASK_ALL, PIC_MASK_ALL);
	return check_failures ? 1 : 0;
}
