/*
 * pc.h - the PC's interrupt controllers and interval timer (lib/pc.c).
 */
#ifndef POPEK_PC_H
#define POPEK_PC_H

#include <stdint.h>

/* Reinitialises both 8259As: IRQs 0-7 raise vectors master_base.., IRQs
 * 8-15 slave_base.. (multiples of 8), slave cascaded on IRQ 2, and every
 * IRQ masked. */
void pic_remap(uint8_t master_base, uint8_t slave_base);
/* Masks: bit n set blocks IRQ n (master) or IRQ 8+n (slave). */
void pic_set_masks(uint8_t master, uint8_t slave);
/* Non-specific end of interrupt for a master IRQ. */
void pic_eoi_master(void);
/* The master's interrupt request register: bit n is IRQ n waiting. */
uint8_t pic_master_irr(void);

/* Starts PIT channel 0 as a rate generator (mode 2) dividing the 1.193182
 * MHz clock by divisor: IRQ 0 fires once per divisor input clocks. */
void pit_start_rate(uint16_t divisor);
/* Channel 0's current count, latched so both bytes belong together.  In
 * mode 2 it counts down from the divisor to 1, then reloads. */
uint16_t pit_read_count(void);

/* Follows the PIT count to notice it reloading: call pit_watch_poll often
 * (more than once per period) and it counts the reloads it sees. */
struct pit_watch {
	uint16_t last;		/* the count at the previous poll */
	unsigned reloads;	/* times the count went up since the start */
};
void pit_watch_start(struct pit_watch *w);
void pit_watch_poll(struct pit_watch *w);

#endif
