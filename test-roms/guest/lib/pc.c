// pc.c - the 8259A interrupt controllers and the 8254 interval timer.
#include "pc.h"
#include "x86.h"

void pic_remap(uint8_t master_base, uint8_t slave_base)
{
	// ICW1 starts the init sequence; ICW2-4 then go to the data port:
	// the vector base, the cascade wiring and the 8086 mode.
	outb(PIC1_CMD, ICW1_INIT_ICW4);
	outb(PIC2_CMD, ICW1_INIT_ICW4);
	outb(PIC1_DATA, master_base);
	outb(PIC2_DATA, slave_base);
	outb(PIC1_DATA, ICW3_MASTER_SLAVE_IRQ2);
	outb(PIC2_DATA, ICW3_SLAVE_ID2);
	outb(PIC1_DATA, ICW4_8086);
	outb(PIC2_DATA, ICW4_8086);
	pic_set_masks(PIC_MASK_ALL, PIC_MASK_ALL);
}

void pic_set_masks(uint8_t master, uint8_t slave)
{
	// After initialisation, a data-port write is OCW1, the mask.
	outb(PIC1_DATA, master);
	outb(PIC2_DATA, slave);
}

void pic_eoi_master(void)
{
	outb(PIC1_CMD, OCW2_EOI);
}

uint8_t pic_master_irr(void)
{
	outb(PIC1_CMD, OCW3_READ_IRR);
	return inb(PIC1_CMD);
}

void pit_start_rate(uint16_t divisor)
{
	outb(PIT_CMD, PIT_SEL_CH0 | PIT_ACCESS_LOHI | PIT_MODE_RATE);
	outb(PIT_CH0, (uint8_t)divisor);
	outb(PIT_CH0, (uint8_t)(divisor >> 8));
}

uint16_t pit_read_count(void)
{
	// The latch command freezes the count until both bytes are read.
	outb(PIT_CMD, PIT_SEL_CH0 | PIT_LATCH);
	uint8_t lo = inb(PIT_CH0);
	uint8_t hi = inb(PIT_CH0);

	return (uint16_t)(hi << 8 | lo);
}

void pit_watch_start(struct pit_watch *w)
{
	w->last = pit_read_count();
	w->reloads = 0;
}

void pit_watch_poll(struct pit_watch *w)
{
	uint16_t now = pit_read_count();

	// A down-counter only goes up by reloading.
	if (now > w->last)
		w->reloads++;
	w->last = now;
}
