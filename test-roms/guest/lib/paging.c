// paging.c - identity-mapped page tables (SDM vol. 3, ch. 4).
//
// A page is accessible from ring 3, or writable, only if every level of
// the walk allows it, so the upper levels here allow everything and the
// last level decides.  The helpers do not flush the TLB: they are meant
// for tables not in use yet, or the caller follows them with invlpg().
#include "cpu.h"

// What the non-leaf entries allow: everything.
#define TABLE_FLAGS (PTE_P | PTE_RW | PTE_US)

void paging32_identity(uint32_t *pd, uint32_t *pt, uint32_t pte_flags)
{
	for (uint32_t i = 0; i < PT32_ENTRIES; i++) {
		pt[i] = i << PAGE_SHIFT | pte_flags;
		pd[i] = 0;	// nothing above 4 MiB
	}
	pd[0] = (uint32_t)(uintptr_t)pt | TABLE_FLAGS;
}

uint32_t *paging32_pte(uint32_t *pd, uint32_t va)
{
	uint32_t *pt = (uint32_t *)(uintptr_t)(pd[va >> PD32_SHIFT] & PAGE_MASK);

	return &pt[(va >> PAGE_SHIFT) % PT32_ENTRIES];
}

void paging32_update(uint32_t *pd, uint32_t start, uint32_t end,
		     uint32_t set, uint32_t clear)
{
	for (uint32_t va = start & PAGE_MASK; va < end; va += PAGE_SIZE) {
		uint32_t *pte = paging32_pte(pd, va);

		*pte = (*pte & ~clear) | set;
	}
}

void paging32_enable(uint32_t *pd)
{
	write_cr3((uint32_t)(uintptr_t)pd);
	// WP makes read-only pages read-only for ring 0 as well.
	write_cr0(read_cr0() | CR0_PG | CR0_WP);
}

void long_mode_enable(struct paging64 *t, uint32_t cr0_bits)
{
	write_cr4(read_cr4() | CR4_PAE);
	write_cr3((uint32_t)(uintptr_t)t);	// the PML4 is the first table
	wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_LME);
	write_cr0(read_cr0() | CR0_PG | cr0_bits);
}

void paging64_identity(struct paging64 *t, uint32_t span, uint64_t leaf_flags)
{
	for (uint32_t i = 0; i < PT64_ENTRIES; i++) {
		t->pml4[i] = t->pdpt[i] = t->pd[i] = 0;
		t->pt[i] = (uint64_t)i << PAGE_SHIFT | leaf_flags;
	}
	t->pml4[0] = (uint32_t)(uintptr_t)t->pdpt | TABLE_FLAGS;
	t->pdpt[0] = (uint32_t)(uintptr_t)t->pd | TABLE_FLAGS;
	// The first 2 MiB go through a page table so single pages can differ
	// (ring-3 pages next to the kernel); the rest use 2 MiB pages.
	t->pd[0] = (uint32_t)(uintptr_t)t->pt | TABLE_FLAGS;
	for (uint32_t i = 1; i < span / LARGE_PAGE_2M && i < PT64_ENTRIES; i++)
		t->pd[i] = (uint64_t)i << PD64_SHIFT | leaf_flags | PTE_PS;
}

void paging64_update(struct paging64 *t, uint32_t start, uint32_t end,
		     uint64_t set, uint64_t clear)
{
	for (uint32_t va = start & PAGE_MASK; va < end && va < LARGE_PAGE_2M;
	     va += PAGE_SIZE) {
		uint64_t *pte = &t->pt[va >> PAGE_SHIFT];

		*pte = (*pte & ~clear) | set;
	}
}
