/*
 * popek_pv.h - Popek's para-virtualization ABI for guests (docs/guest-abi.md).
 *
 * A guest that finds Popek's signature at CPUID leaf 0x40000000 gives the
 * VMM a page for the hypercall stubs (PV_MSR_HYPERCALL_PAGE) and then asks
 * the VMM for services by calling stub NR in that page with the arguments
 * in EBX and ECX; the result comes back in EAX (negative: -PV_E*).  Which
 * trap instruction the stubs hold is the VMM's business: never hard-code
 * it.  The numbers below must match emu-core/src/pv/abi.rs.
 */
#ifndef POPEK_PV_H
#define POPEK_PV_H

#include <stdint.h>

#define PV_LEAF_SIGNATURE 0x40000000u	/* EAX = max leaf; EBX,ECX,EDX = signature */
#define PV_LEAF_INTERFACE 0x40000001u	/* EAX = version, EBX = MSR, ECX = calls */
#define PV_SIGNATURE "PopekPopekVM"
#define PV_MSR_HYPERCALL_PAGE 0x504F5000u
#define PV_STUB_SIZE 32			/* stub NR is at page + NR * 32 */
#define PV_IDT_OFFSET 0x800		/* where the VMM builds the IDT */

/* Hypercall numbers (EAX). */
#define HC_CONSOLE_WRITE 0	/* (ptr, len) -> len */
#define HC_SHUTDOWN 1		/* (status): does not return */
#define HC_SCHED_OP 2		/* (SCHED_*) */
#define HC_SET_TIMER 3		/* (delay ns low, high); 0 cancels */
#define HC_MMU_UPDATE 4		/* (struct pv_mmu_update *, count) */
#define HC_SET_TRAP_TABLE 5	/* (struct pv_trap_info *, count) */
#define HC_SET_CALLBACK 6	/* (callback address, 0 = none) */
#define HC_SHARED_INFO 7	/* (guest-physical page) */
#define HC_MMU_BASE 8		/* (guest-physical page directory) */
#define HC_COUNT 9

#define SCHED_YIELD 0		/* return at once */
#define SCHED_BLOCK 1		/* unmask events, wait until one is pending */

/* Errors, returned negated. */
#define PV_EPERM 1		/* not called from ring 0 */
#define PV_ENOENT 2		/* a page the call needs is not registered */
#define PV_EACCES 13		/* mapping outside RAM, or a VMM page for ring 3 */
#define PV_EFAULT 14		/* a pointer is not mapped or not in RAM */
#define PV_EINVAL 22		/* a malformed argument */
#define PV_EDEADLK 35		/* blocking with nothing that could wake us */
#define PV_ENOSYS 38		/* no such call (in this mode) */

/* One entry of an HC_MMU_UPDATE batch. */
struct pv_mmu_update {
	uint64_t ptr;		/* guest-physical address of the entry */
	uint64_t val;		/* its new value */
};
#define PV_MMU_UPDATE_MAX 512

/* One entry of an HC_SET_TRAP_TABLE table. */
struct pv_trap_info {
	uint8_t vector;
	uint8_t flags;		/* PV_TRAP_DPL(n) | PV_TRAP_KEEP_IF */
	uint16_t cs;		/* a ring-0 32-bit code segment */
	uint32_t handler;
};
#define PV_TRAP_DPL(n) ((n) & 3)	/* rings allowed to INT n to it */
#define PV_TRAP_KEEP_IF 0x4		/* trap gate rather than interrupt gate */

/* The shared-info page (HC_SHARED_INFO). */
struct pv_shared_info {
	volatile uint32_t events_masked;	/* the virtual interrupt flag, inverted */
	volatile uint32_t events_pending;	/* PV_EVENT_* bits, cleared by the guest */
	volatile uint64_t time_ns;		/* virtual time at the last hypercall */
};
#define PV_EVENT_TIMER 0x1

/* ---- The library side (lib/pv.c) ---- */

/* The hypercall page and the shared-info page (page-aligned kernel pages,
 * identity-mapped as the ABI asks of the hypercall page). */
extern uint8_t pv_hypercall_page[];
extern union pv_shared_page {
	struct pv_shared_info info;
	uint8_t bytes[4096];
} pv_shared_page;
#define pv_shared (pv_shared_page.info)

/* Hypercall NR with arguments a (EBX) and b (ECX). */
static inline __attribute__((always_inline)) int32_t
pv_call(uint32_t nr, uint32_t a, uint32_t b)
{
	int32_t ret;

	__asm__ volatile("call *%[stub]"
			 : "=a"(ret)
			 : [stub] "r"(pv_hypercall_page + nr * PV_STUB_SIZE), "b"(a), "c"(b)
			 : "memory", "cc");
	return ret;
}

/* Whether CPUID shows Popek's signature. */
int pv_detect(void);
/* Detects Popek, registers the hypercall and shared-info pages and sends
 * serial_putc's output and popek_exit to the hypervisor console and
 * HC_SHUTDOWN.  0, or -1 when not running under Popek. */
int pv_init(void);
/* Registers the event callback: handler runs with events masked, given
 * the pending bits (already cleared). */
int32_t pv_set_event_handler(void (*handler)(uint32_t pending));
/* Masks events (the virtual CLI). */
static inline void pv_events_mask(void)
{
	pv_shared.events_masked = 1;
}
/* Unmasks events (the virtual STI); enters the VMM if some are waiting,
 * which delivers them. */
void pv_events_unmask(void);

#endif
