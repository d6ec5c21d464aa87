// desc.c - the GDT, TSS descriptors and IDT gates (SDM vol. 3, ch. 3 and 6).
#include "cpu.h"

uint64_t gdt[GDT_ENTRIES] __attribute__((aligned(8)));

// The operand of LGDT and LIDT in 32-bit code: limit, then base.
struct table_ptr {
	uint16_t limit;
	uint32_t base;
} __attribute__((packed));

// A segment descriptor: limit 15:0 in bits 0-15, base 23:0 in bits 16-39,
// the access byte in 40-47, limit 19:16 in 48-51, the flags nibble in
// 52-55 and base 31:24 in 56-63.
uint64_t seg_desc(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
	return (uint64_t)(limit & 0xFFFF) |
	       (uint64_t)(base & 0xFFFFFF) << 16 |
	       (uint64_t)access << 40 |
	       (uint64_t)((limit >> 16) & 0xF) << 48 |
	       (uint64_t)(flags & 0xF) << 52 |
	       (uint64_t)(base >> 24) << 56;
}

static uint8_t dpl_bits(unsigned dpl)
{
	return (uint8_t)(dpl << DESC_DPL_SHIFT);
}

void gdt_init(const void *tss, uint32_t tss_size)
{
	const uint8_t code = DESC_P | DESC_S | DESC_CODE | DESC_RW;
	const uint8_t data = DESC_P | DESC_S | DESC_RW;
	const uint8_t user = dpl_bits(RPL_USER);
	// 32-bit segments need D/B set; 64-bit code needs L set and D/B
	// clear.  Long mode ignores base and limit of code and data, but the
	// 4 GiB limit keeps them usable from 32-bit code too.
	const uint8_t flat32 = DESC_G | DESC_DB;
	const uint8_t flat64 = DESC_G | DESC_L;

	for (unsigned i = 0; i < GDT_ENTRIES; i++)
		gdt[i] = 0;	// entry 0 must be the null descriptor
	gdt[SEL_KCODE32 >> SEL_INDEX_SHIFT] = seg_desc(0, DESC_LIMIT_4G, code, flat32);
	gdt[SEL_KDATA >> SEL_INDEX_SHIFT] = seg_desc(0, DESC_LIMIT_4G, data, flat32);
	gdt[SEL_UCODE32 >> SEL_INDEX_SHIFT] = seg_desc(0, DESC_LIMIT_4G, code | user, flat32);
	gdt[SEL_UDATA >> SEL_INDEX_SHIFT] = seg_desc(0, DESC_LIMIT_4G, data | user, flat32);
	gdt[SEL_UCODE64 >> SEL_INDEX_SHIFT] = seg_desc(0, DESC_LIMIT_4G, code | user, flat64);
	gdt[SEL_KCODE64 >> SEL_INDEX_SHIFT] = seg_desc(0, DESC_LIMIT_4G, code, flat64);
	gdt[SEL_KDATA64 >> SEL_INDEX_SHIFT] = seg_desc(0, DESC_LIMIT_4G, data, flat32);
	// A system descriptor (DESC_S clear); the limit is the last byte.
	// The slot after it stays zero: in long mode it holds base 63:32.
	if (tss)
		gdt[SEL_TSS >> SEL_INDEX_SHIFT] =
			seg_desc((uint32_t)(uintptr_t)tss, tss_size - 1,
				 DESC_P | SYS_TSS_AVAIL, 0);

	gdt_load(gdt, GDT_ENTRIES);
	// The segment registers keep their old descriptors until reloaded:
	// CS only changes through a far transfer.
	__asm__ volatile("ljmp %0, $1f\n"
			 "1:\tmov %w1, %%ds\n\t"
			 "mov %w1, %%es\n\t"
			 "mov %w1, %%fs\n\t"
			 "mov %w1, %%gs\n\t"
			 "mov %w1, %%ss"
			 :
			 : "i"(SEL_KCODE32), "r"(SEL_KDATA)
			 : "memory");
}

void gdt_load(const uint64_t *table, unsigned entries)
{
	struct table_ptr ptr = { (uint16_t)(entries * sizeof *table - 1),
				 (uint32_t)(uintptr_t)table };

	__asm__ volatile("lgdt %0" : : "m"(ptr) : "memory");
}

void ltr(uint16_t selector)
{
	__asm__ volatile("ltr %0" : : "r"(selector) : "memory");
}

// Gates: offset 15:0, selector, then IST (long mode) and the type byte
// (present, DPL, type), offset 31:16 and, in long mode, offset 63:32.
static uint8_t gate_attr(unsigned type, unsigned dpl)
{
	return (uint8_t)(DESC_P | dpl_bits(dpl) | type);
}

void idt32_set(struct gate32 *idt, unsigned vec, uint32_t handler,
	       uint16_t selector, unsigned type, unsigned dpl)
{
	struct gate32 *g = &idt[vec];

	g->offset_lo = (uint16_t)handler;
	g->selector = selector;
	g->zero = 0;
	g->type_attr = gate_attr(type, dpl);
	g->offset_hi = (uint16_t)(handler >> 16);
}

void idt64_set(struct gate64 *idt, unsigned vec, uint32_t handler,
	       uint16_t selector, unsigned type, unsigned dpl, unsigned ist)
{
	struct gate64 *g = &idt[vec];

	g->offset_lo = (uint16_t)handler;
	g->selector = selector;
	g->ist = (uint8_t)ist;
	g->type_attr = gate_attr(type, dpl);
	g->offset_mid = (uint16_t)(handler >> 16);
	g->offset_hi = 0;	// the ROMs live below 4 GiB
	g->reserved = 0;
}

void idt32_load(const struct gate32 *idt)
{
	struct table_ptr ptr = { IDT_VECTORS * sizeof *idt - 1,
				 (uint32_t)(uintptr_t)idt };

	__asm__ volatile("lidt %0" : : "m"(ptr) : "memory");
}
