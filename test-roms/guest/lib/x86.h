/*
 * x86.h - architectural constants and privileged-instruction helpers.
 *
 * Every number the system-level ROMs feed to the hardware is named here, so
 * the ROMs read as "set CR0_PG" rather than "or 0x80000000".  The values
 * come from the Intel SDM volume 3 (and the datasheets of the PC devices).
 * The header works from C and from GNU as (.S files): the constants are
 * plain integers, and the C helpers are hidden from the assembler.
 */
#ifndef POPEK_X86_H
#define POPEK_X86_H

/* ---- Segment selectors of the GDT that lib/desc.c builds -------------- */
/*
 * SYSENTER/SYSEXIT and SYSCALL/SYSRET do not read the GDT to find their
 * selectors: they take one MSR value and add fixed offsets.  That fixes the
 * order of the first entries:
 *   SYSENTER: CS = SYSENTER_CS, SS = +8; SYSEXIT: CS = +16, SS = +24 (RPL 3)
 *   SYSCALL:  CS = STAR[47:32], SS = +8
 *   SYSRET to 64-bit code: CS = STAR[63:48] + 16, SS = STAR[63:48] + 8
 */
#define SEL_KCODE32 0x08	/* ring-0 32-bit code; SYSENTER_CS */
#define SEL_KDATA 0x10		/* ring-0 flat data and stack */
#define SEL_UCODE32 0x18	/* ring-3 32-bit code; STAR[63:48] base */
#define SEL_UDATA 0x20		/* ring-3 flat data and stack */
#define SEL_UCODE64 0x28	/* ring-3 64-bit code (SYSRET's CS) */
#define SEL_KCODE64 0x30	/* ring-0 64-bit code; STAR[47:32] */
#define SEL_KDATA64 0x38	/* ring-0 data again, as SYSCALL's SS */
#define SEL_TSS 0x40		/* TSS; 16 bytes wide in long mode */
#define GDT_ENTRIES 10		/* 8-byte slots, the TSS taking two */

#define SEL_INDEX_SHIFT 3	/* bits 15:3 of a selector index the table */
#define SEL_RPL_MASK 0x3	/* requested privilege level bits */
#define SEL_MASK 0xFFFF		/* a selector saved in a 32-bit slot */
#define RPL_KERNEL 0
#define RPL_USER 3

/* ---- Segment descriptors ----------------------------------------------- */
/* Access byte (descriptor bits 40-47). */
#define DESC_RW 0x02		/* data: writable; code: readable */
#define DESC_ED 0x04		/* data: expand-down; code: conforming */
#define DESC_CODE 0x08		/* executable (with DESC_S) */
#define DESC_S 0x10		/* code/data rather than a system segment */
#define DESC_DPL_SHIFT 5	/* descriptor privilege level, bits 5-6 */
#define DPL_KERNEL 0		/* ring 0 */
#define DPL_USER 3		/* ring 3 */
#define DESC_P 0x80		/* present */
/* System descriptor and gate types (DESC_S clear). */
#define SYS_TSS_AVAIL 0x9	/* 32-bit TSS; the 64-bit TSS in long mode */
#define GATE_INT 0xE		/* interrupt gate (clears IF); 64-bit in long mode */
#define GATE_TRAP 0xF		/* trap gate (leaves IF alone) */
/* Flags nibble (descriptor bits 52-55). */
#define DESC_L 0x2		/* 64-bit code segment */
#define DESC_DB 0x4		/* 32-bit default operand size / stack */
#define DESC_G 0x8		/* limit counts 4 KiB pages */
#define DESC_LIMIT_4G 0xFFFFF	/* with DESC_G: the whole 4 GiB */

/* ---- Control registers --------------------------------------------------- */
#define CR0_PE 0x00000001	/* protected mode */
#define CR0_WP 0x00010000	/* ring 0 honours read-only pages too */
#define CR0_PG 0x80000000	/* paging */
#define CR4_PAE 0x00000020	/* 64-bit page table entries (long mode needs it) */

/* ---- EFLAGS ---------------------------------------------------------------- */
#define FL_CF 0x00000001	/* carry */
#define FL_FIXED 0x00000002	/* bit 1 always reads as 1 */
#define FL_PF 0x00000004	/* parity */
#define FL_AF 0x00000010	/* auxiliary carry */
#define FL_ZF 0x00000040	/* zero */
#define FL_SF 0x00000080	/* sign */
#define FL_TF 0x00000100	/* single-step trap */
#define FL_IF 0x00000200	/* maskable interrupts enabled */
#define FL_DF 0x00000400	/* string instructions count down */
#define FL_OF 0x00000800	/* signed overflow */
#define FL_IOPL_MASK 0x00003000	/* I/O privilege level, bits 12-13 */
#define FL_AC 0x00040000	/* alignment check */
#define FL_STATUS (FL_CF | FL_PF | FL_AF | FL_ZF | FL_SF | FL_OF)

/* ---- Model-specific registers ------------------------------------------- */
#define MSR_HIGH_SHIFT 32	/* RDMSR/WRMSR: EDX holds bits 63:32 */
#define MSR_SYSENTER_CS 0x174	/* SYSENTER's ring-0 CS (SS = CS + 8) */
#define MSR_SYSENTER_ESP 0x175	/* SYSENTER's ring-0 ESP */
#define MSR_SYSENTER_EIP 0x176	/* SYSENTER's entry point */
#define MSR_EFER 0xC0000080	/* extended feature enables */
#define MSR_STAR 0xC0000081	/* SYSCALL/SYSRET selector bases */
#define MSR_LSTAR 0xC0000082	/* SYSCALL's 64-bit entry point */
#define MSR_FMASK 0xC0000084	/* RFLAGS bits SYSCALL clears */
#define EFER_SCE 0x001		/* SYSCALL/SYSRET enabled */
#define EFER_LME 0x100		/* long mode enabled (takes effect with CR0.PG) */
#define EFER_LMA 0x400		/* long mode active (read-only) */
#define STAR_SYSCALL_SHIFT 32	/* STAR[47:32]: SYSCALL's CS */
#define STAR_SYSRET_SHIFT 48	/* STAR[63:48]: SYSRET's selector base */
#define SYSCALL_INSN_WORD 0x050F	/* SYSCALL's bytes 0F 05 as a little-endian word */

/* ---- Exceptions ------------------------------------------------------------ */
#define VEC_DE 0		/* divide error */
#define VEC_UD 6		/* invalid opcode */
#define VEC_DF 8		/* double fault */
#define VEC_TS 10		/* invalid TSS */
#define VEC_NP 11		/* segment not present */
#define VEC_SS 12		/* stack-segment fault */
#define VEC_GP 13		/* general protection */
#define VEC_PF 14		/* page fault */
#define VEC_AC 17		/* alignment check */
#define VEC_CP 21		/* control protection */
#define VEC_SX 30		/* security exception (AMD) */
#define VEC_FIRST_IRQ 32	/* vectors below are reserved for exceptions */
#define IDT_VECTORS 256

/* Page-fault error code bits. */
#define PF_ERR_P 0x1		/* the page was present (a protection fault) */
#define PF_ERR_W 0x2		/* the access was a write */
#define PF_ERR_U 0x4		/* the access came from ring 3 */
/* Error code of faults that name a selector or IDT vector. */
#define ERR_EXT 0x1		/* raised by an external event */
#define ERR_IDT 0x2		/* the index is an IDT vector */
#define ERR_INDEX_SHIFT 3	/* selector index / vector starts at bit 3 */

/* ---- Paging -------------------------------------------------------------- */
#define PAGE_SIZE 4096
#define PAGE_SHIFT 12		/* bits 11:0 are the offset in a page */
#define PD32_SHIFT 22		/* 32-bit paging: bits 31:22 index the directory */
#define PD64_SHIFT 21		/* PAE/long mode: bits 29:21 index a directory */
#define PAGE_MASK 0xFFFFF000	/* the frame address bits of a 32-bit entry */
#define LARGE_PAGE_2M 0x200000	/* a PAE/long-mode page directory leaf */
#define PTE_P 0x001		/* present */
#define PTE_RW 0x002		/* writable */
#define PTE_US 0x004		/* accessible from ring 3 */
#define PTE_PS 0x080		/* page directory entry maps a large page */
#define PT32_ENTRIES 1024	/* 4-byte entries per 32-bit table */
#define PT64_ENTRIES 512	/* 8-byte entries per PAE/long-mode table */
/* Long mode's lowest non-canonical address: bits 63:47 must be equal. */
#define NONCANONICAL_ADDR 0x0000800000000000

/* ---- PC I/O ports ---------------------------------------------------------- */
#define COM1_BASE 0x3F8		/* first serial port (16550 UART) */
#define UART_THR (COM1_BASE + 0)	/* transmit holding register */
#define UART_LSR (COM1_BASE + 5)	/* line status register */
#define UART_LSR_THRE 0x20	/* LSR: THR empty, ready for a byte */
#define DEBUG_EXIT_PORT 0xF4	/* isa-debug-exit device (iobase=0xf4) */

/* 8259A programmable interrupt controllers, master and slave. */
#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xA0
#define PIC2_DATA 0xA1
#define ICW1_INIT_ICW4 0x11	/* ICW1: initialise, edge triggered, ICW4 follows */
#define ICW3_MASTER_SLAVE_IRQ2 0x04	/* master ICW3: a slave on IRQ 2 */
#define ICW3_SLAVE_ID2 0x02	/* slave ICW3: cascade identity 2 */
#define ICW4_8086 0x01		/* ICW4: 8086 mode, normal EOI */
#define OCW2_EOI 0x20		/* OCW2: non-specific end of interrupt */
#define OCW3_READ_IRR 0x0A	/* OCW3: the next command-port read gives IRR */
#define PIC_MASK_ALL 0xFF
#define PIC_LINES 8		/* IRQ inputs per 8259A */
#define IRQ_TIMER 0		/* the PIT's channel 0 output */

/* 8253/8254 programmable interval timer. */
#define PIT_CH0 0x40		/* channel 0 data port */
#define PIT_CMD 0x43		/* mode/command register */
#define PIT_HZ 1193182		/* input clock, Hz */
#define PIT_SEL_CH0 0x00	/* command bits 7-6: channel 0 */
#define PIT_LATCH 0x00		/* command bits 5-4: latch count (with channel) */
#define PIT_ACCESS_LOHI 0x30	/* command bits 5-4: low byte, then high */
#define PIT_MODE_RATE 0x04	/* command bits 3-1: mode 2, rate generator */

/* ---- Real mode ----------------------------------------------------------- */
#define RESET_CS 0xF000		/* CS selector after reset (base 0xFFFF0000) */
#define IVT_ENTRY_SIZE 4	/* real-mode vector: offset word, segment word */
#define PARA_SHIFT 4		/* real-mode linear = segment << 4 + offset */

#ifndef __ASSEMBLER__
#include <stdint.h>

/* Always inlined, so ring-3 code (cpu.h's USER_TEXT) can use the helpers
 * that work there without calling into kernel-only pages. */
#define X86_INLINE static inline __attribute__((always_inline))

/* ---- Port I/O ---- */
X86_INLINE void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

X86_INLINE void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

X86_INLINE void outw(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

X86_INLINE uint16_t inw(uint16_t port)
{
	uint16_t v;

	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

X86_INLINE uint8_t inb(uint16_t port)
{
	uint8_t v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* ---- Model-specific registers ---- */
X86_INLINE uint64_t rdmsr(uint32_t msr)
{
	uint64_t v;

	__asm__ volatile("rdmsr" : "=A"(v) : "c"(msr));
	return v;
}

X86_INLINE void wrmsr(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "A"(v) : "memory");
}

/* ---- Control registers ---- */
#define DEFINE_CR(n)                                                          \
	X86_INLINE uint32_t read_cr##n(void)                                  \
	{                                                                     \
		uint32_t v;                                                   \
		__asm__ volatile("mov %%cr" #n ", %0" : "=r"(v));             \
		return v;                                                     \
	}                                                                     \
	X86_INLINE void write_cr##n(uint32_t v)                               \
	{                                                                     \
		__asm__ volatile("mov %0, %%cr" #n : : "r"(v) : "memory");    \
	}
DEFINE_CR(0)
DEFINE_CR(2)
DEFINE_CR(3)
DEFINE_CR(4)
#undef DEFINE_CR

/* Drops the TLB entry for the page holding addr. */
X86_INLINE void invlpg(const volatile void *addr)
{
	__asm__ volatile("invlpg (%0)" : : "r"(addr) : "memory");
}

X86_INLINE uint16_t read_cs(void)
{
	uint16_t v;

	__asm__ volatile("mov %%cs, %0" : "=r"(v));
	return v;
}

X86_INLINE uint16_t read_ss(void)
{
	uint16_t v;

	__asm__ volatile("mov %%ss, %0" : "=r"(v));
	return v;
}

X86_INLINE void cli(void)
{
	__asm__ volatile("cli" : : : "memory");
}

X86_INLINE void sti(void)
{
	__asm__ volatile("sti" : : : "memory");
}
#endif /* !__ASSEMBLER__ */

#endif
