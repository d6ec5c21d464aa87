/*
 * cpu.h - descriptor tables, paging and trap entry for the system-level ROMs.
 *
 * lib/desc.c builds the one GDT layout that x86.h names, TSSs and IDT gates;
 * lib/paging.c builds identity-mapped page tables for 32-bit and long mode;
 * lib/trap32.S and lib/trap.c turn every IDT vector into a call of one C
 * function with the saved registers; lib/long64.S is the 64-bit counterpart.
 * Every table here is identity-mapped or used with paging off, so a table's
 * address is also its physical address.
 */
#ifndef POPEK_CPU_H
#define POPEK_CPU_H

#include "x86.h"

/* Each trap stub is this many bytes, so vector v's entry point is
 * trap32_stubs + v * TRAP_STUB_SIZE (and the same for trap64_stubs). */
#define TRAP_STUB_SIZE 16
/* The vectors for which the CPU pushes an error code (SDM vol. 3, table
 * 6-1); the trap stubs push a 0 for the others, so all frames match. */
#define VEC_HAS_ERROR(v) ((v) == VEC_DF || ((v) >= VEC_TS && (v) <= VEC_PF) || \
			  (v) == VEC_AC || (v) == VEC_CP || (v) == VEC_SX)
/* Pseudo-vector of trap frames built by sysenter_entry, not by an IDT gate. */
#define TRAP_SYSENTER 0x100

/* Sizes and offsets for the assembly that fills long-mode tables. */
#define GATE64_SIZE 16		/* a long-mode IDT gate */
#define PAGING64_SIZE (4 * PAGE_SIZE)	/* struct paging64 */
#define TSS64_RSP0 4		/* stack for entries from ring 3 */
#define TSS64_IST(n) (36 + ((n) - 1) * 8)	/* interrupt stack n (1-7) */
#define TSS64_IOMAP 102		/* I/O permission bitmap offset */
#define TSS64_SIZE 104
#define TSS32_SIZE 104

/* Offsets in struct trap_frame64 (lib/long64.S builds it). */
#define TF64_RAX 0
#define TF64_RBX 8
#define TF64_RCX 16
#define TF64_RDX 24
#define TF64_RSI 32
#define TF64_RDI 40
#define TF64_RBP 48
#define TF64_R8 56
#define TF64_R15 112
#define TF64_VECTOR 120
#define TF64_ERROR 128
#define TF64_RIP 136		/* from here on pushed by the CPU */
#define TF64_CS 144
#define TF64_RFLAGS 152
#define TF64_RSP 160
#define TF64_SS 168
#define TF64_SIZE 176

#ifdef __ASSEMBLER__
/* TRAP_STUBS common: the IDT_VECTORS trap stubs, stub v at v * TRAP_STUB_SIZE
 * from here.  Each makes the stack look the same (a dummy error code where the
 * CPU pushes none, then the vector) and jumps to `common`; lib/trap32.S and
 * lib/long64.S each place one set, before their own common code. */
.macro TRAP_STUBS common
	.set vec, 0
	.rept IDT_VECTORS
	.balign TRAP_STUB_SIZE
	.if !VEC_HAS_ERROR(vec)
	push $0
	.endif
	push $vec
	jmp \common
	.set vec, vec + 1
	.endr
.endm
#endif

#ifndef __ASSEMBLER__
#include <stdint.h>

/* ---- Descriptor tables (desc.c) ---- */

/* A 32-bit TSS.  The ROMs only use it to give ring 0 a stack (ESP0/SS0)
 * for interrupts and exceptions that arrive from ring 3. */
struct tss32 {
	uint32_t link;
	uint32_t esp0, ss0, esp1, ss1, esp2, ss2;
	uint32_t cr3, eip, eflags;
	uint32_t eax, ecx, edx, ebx, esp, ebp, esi, edi;
	uint32_t es, cs, ss, ds, fs, gs, ldt;
	uint16_t trap, iomap_base;
};
_Static_assert(sizeof(struct tss32) == TSS32_SIZE, "the SDM's 32-bit TSS");

/* The 64-bit TSS: no register image, just stacks (RSP0-2, IST1-7). */
struct tss64 {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];	/* ist[0] is IST1 */
	uint64_t reserved2;
	uint16_t reserved3, iomap_base;
} __attribute__((packed));
_Static_assert(sizeof(struct tss64) == TSS64_SIZE, "the SDM's 64-bit TSS");
_Static_assert(__builtin_offsetof(struct tss64, rsp[0]) == TSS64_RSP0, "RSP0");
_Static_assert(__builtin_offsetof(struct tss64, ist[2]) == TSS64_IST(3), "IST3");
_Static_assert(__builtin_offsetof(struct tss64, iomap_base) == TSS64_IOMAP, "I/O map");

/* Interrupt/trap gates: 8 bytes in protected mode, 16 in long mode. */
struct gate32 {
	uint16_t offset_lo, selector;
	uint8_t zero, type_attr;
	uint16_t offset_hi;
};
struct gate64 {
	uint16_t offset_lo, selector;
	uint8_t ist, type_attr;
	uint16_t offset_mid;
	uint32_t offset_hi, reserved;
};
_Static_assert(sizeof(struct gate64) == GATE64_SIZE, "a long-mode gate");

/* The GDT, laid out as x86.h's SEL_* say. */
extern uint64_t gdt[GDT_ENTRIES];

/* A code or data descriptor: base, the 20-bit limit field, the access byte
 * (DESC_P, DESC_S, ...) and the flags nibble (DESC_G, DESC_DB, DESC_L). */
uint64_t seg_desc(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags);
/* Loads GDTR with a table of `entries` descriptors; the segment registers
 * keep what they hold until reloaded. */
void gdt_load(const uint64_t *table, unsigned entries);

/* Builds the GDT: flat 4 GiB code and data for rings 0 and 3, 32-bit and
 * 64-bit code, and (when tss is not NULL) an available-TSS descriptor of
 * tss_size bytes.  Loads it, reloads CS with SEL_KCODE32 and DS, ES, FS,
 * GS and SS with SEL_KDATA.  Does not load TR: see ltr(). */
void gdt_init(const void *tss, uint32_t tss_size);
/* Loads the task register; the descriptor must be an available TSS. */
void ltr(uint16_t selector);

/* Sets IDT entry vec to a gate of the given type (GATE_INT or GATE_TRAP)
 * into handler at CS = selector, callable by INT n from rings <= dpl. */
void idt32_set(struct gate32 *idt, unsigned vec, uint32_t handler,
	       uint16_t selector, unsigned type, unsigned dpl);
/* The same for long mode; ist 1-7 switches to that TSS stack, 0 does not. */
void idt64_set(struct gate64 *idt, unsigned vec, uint32_t handler,
	       uint16_t selector, unsigned type, unsigned dpl, unsigned ist);
/* Loads IDTR with a 256-entry protected-mode IDT. */
void idt32_load(const struct gate32 *idt);

/* ---- 32-bit trap entry (trap32.S, trap.c) ---- */

/* The registers trap32.S saves, lowest address first.  user_esp and
 * user_ss exist only for traps from ring 3 (the CPU pushes them only when
 * it switches stacks). */
struct trap_frame {
	uint32_t gs, fs, es, ds;
	uint32_t edi, esi, ebp, esp_unused, ebx, edx, ecx, eax;	/* PUSHA */
	uint32_t vector, error;	/* error is 0 for vectors without one */
	uint32_t eip, cs, eflags;
	uint32_t user_esp, user_ss;
};

/* Vector v's entry stub, for idt32_set. */
extern const char trap32_stubs[];
#define TRAP32_STUB(v) ((uint32_t)(uintptr_t)(trap32_stubs + (v) * TRAP_STUB_SIZE))
/* SYSENTER's entry point: builds a trap frame with vector TRAP_SYSENTER
 * and returns with SYSEXIT.  The frame's eip and user_esp come from EDX and
 * ECX (the SYSEXIT convention); its cs, eflags and user_ss are what SYSEXIT
 * will produce, since the CPU does not save them. */
void sysenter_entry(void);

/* Every trap calls this; it starts as trap32_unexpected.  A handler may
 * change the frame, which the return path loads back (eip included). */
extern void (*trap32_handler)(struct trap_frame *f);
/* Reports the trap as a FAIL line and ends the run with status 1. */
void trap32_unexpected(struct trap_frame *f) __attribute__((noreturn));
/* Points every IDT vector at its stub (ring-0 interrupt gates into
 * SEL_KCODE32) and loads the IDT. */
void trap32_install(struct gate32 *idt);

/* What trap32_record saw last: the vector, and the saved EIP (the faulting
 * instruction for a fault, the next one for a trap).  vector is TRAP_NONE
 * until something is caught; code that expects a fault resets it first. */
#define TRAP_NONE 0xFFFFFFFF
struct trap_record {
	uint32_t vector, eip;
};
extern volatile struct trap_record trap32_last;
/* A trap32_handler for code that raises exceptions on purpose: records the
 * exception in trap32_last and resumes at the address the interrupted code
 * left in EDI. */
void trap32_record(struct trap_frame *f);

/* ---- Long mode (long64.S, trap.c) ---- */
/* long64.S is the 64-bit runtime, in assembly since gcc -m32 cannot
 * compile C to 64-bit code.  Its routines, called with the System V AMD64
 * convention, are listed there; trap64_stubs are the IDT entry points, and
 * the common code passes a struct trap_frame64 (the TF64_* offsets above)
 * to the 64-bit routine that trap64_handler points at. */
extern const char trap64_stubs[];
#define TRAP64_STUB(v) ((uint32_t)(uintptr_t)(trap64_stubs + (v) * TRAP_STUB_SIZE))
/* Points every entry of a 256-gate long-mode IDT at its stub (ring-0
 * interrupt gates into SEL_KCODE64, no IST).  Runs in 32-bit code. */
void trap64_fill(struct gate64 *idt);

/* ---- Paging (paging.c) ---- */

/* 32-bit paging: one page directory and the page table for [0, 4 MiB).
 * Maps that range one to one, every page with pte_flags (PTE_P etc.); the
 * directory entry allows everything, so the page table entries decide. */
void paging32_identity(uint32_t *pd, uint32_t *pt, uint32_t pte_flags);
/* The page table entry that maps va (which must lie in a mapped table). */
uint32_t *paging32_pte(uint32_t *pd, uint32_t va);
/* Sets and clears flags on every page table entry in [start, end). */
void paging32_update(uint32_t *pd, uint32_t start, uint32_t end,
		     uint32_t set, uint32_t clear);
/* Loads CR3 with pd and turns on CR0.PG and CR0.WP. */
void paging32_enable(uint32_t *pd);

/* Long-mode tables: [0, 2 MiB) in 4 KiB pages through pt, then 2 MiB
 * pages up to the span given to paging64_identity. */
struct paging64 {
	uint64_t pml4[PT64_ENTRIES];
	uint64_t pdpt[PT64_ENTRIES];
	uint64_t pd[PT64_ENTRIES];
	uint64_t pt[PT64_ENTRIES];
} __attribute__((aligned(PAGE_SIZE)));
_Static_assert(sizeof(struct paging64) == PAGING64_SIZE, "four tables");
/* Identity-maps [0, span) (span a multiple of 2 MiB, at most 1 GiB), leaf
 * entries with leaf_flags; the upper levels allow everything. */
void paging64_identity(struct paging64 *t, uint32_t span, uint64_t leaf_flags);
/* Turns on long mode from 32-bit protected mode (SDM vol. 3, 10.8.5): CR4.PAE,
 * CR3 = t, EFER.LME, then CR0.PG with cr0_bits (e.g. CR0_WP). Returns in
 * compatibility mode: the caller's far jump to a 64-bit code segment ends
 * the switch. */
void long_mode_enable(struct paging64 *t, uint32_t cr0_bits);
/* Sets and clears flags on the 4 KiB entries in [start, end) (< 2 MiB). */
void paging64_update(struct paging64 *t, uint32_t start, uint32_t end,
		     uint64_t set, uint64_t clear);

/* ---- The ring-3 area (link.ld) ---- */
/* Page-aligned bounds of the .user output section: code and data a ring-3
 * task runs from.  Put things there with these attributes. */
extern char __user_start[], __user_end[];
#define USER_TEXT __attribute__((section(".user.text")))
#define USER_RODATA __attribute__((section(".user.rodata")))
#define USER_DATA __attribute__((section(".user.data")))
/* A string constant placed in user-readable memory (gcc puts literals in
 * .rodata, which is kernel-only). */
#define USER_STR(s)                                                           \
	({                                                                    \
		static const char user_str_[] USER_RODATA = s;                \
		user_str_;                                                    \
	})

#endif /* !__ASSEMBLER__ */

#endif
