// rom: two address spaces: PTE and PDE writes, CR3 switches, A/D bits, #PF
//
// A kernel that does to its page tables what an OS does on every fork,
// mmap and context switch, and checks that the CPU sees each change as
// the SDM says (vol. 3, ch. 4): two page directories share the identity
// map of the low 4 MiB and map one window page above it to different
// frames; the kernel switches CR3 between them and back, remaps the
// window by writing a PTE (then INVLPG), replaces a page table by writing
// a PDE, changes the tables of the space that is *not* loaded and then
// switches to it, watches the accessed and dirty bits the CPU sets, and
// takes page faults on a missing page and on a read-only one.
//
// Under full virtualization (popek run addrspace --engine bt --virt full)
// every one of these is a case for shadow page tables: the guest's tables
// are traced, each PTE or PDE write is a trace fault, the window's first
// use in each space a hidden fault, and the two #PFs true faults that must
// reach this kernel's handler with the right CR2 and error code.
#include "cpu.h"
#include "popek.h"

#define WINDOW_VA 0x00400000u		// first page of the second 4 MiB
#define SECOND_VA (WINDOW_VA + PAGE_SIZE)	// the page after it
#define PDE_WINDOW (WINDOW_VA >> PD32_SHIFT)
#define PTE_A 0x020u			// accessed (set by the CPU)
#define PTE_D 0x040u			// dirty (set by the CPU on a write)
#define PF_VECTOR 14
#define PF_PRESENT 0x1u			// error code: protection, not a missing page
#define PF_WRITE 0x2u			// error code: the access was a write
#define SWITCHES 64			// CR3 round trips in the switching loop
#define LEAF (PTE_P | PTE_RW)		// a kernel page, writable

#define ADDR(p) ((uint32_t)(uintptr_t)(p))

static struct gate32 idt[IDT_VECTORS] __attribute__((aligned(8)));
static uint32_t pd_a[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint32_t pd_b[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint32_t pt_low[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
// The window's page tables: one per space, and a spare a PDE write swaps in.
static uint32_t pt_a[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint32_t pt_b[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint32_t pt_c[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
// The frames the window maps, each holding its own tag in its first word.
static volatile uint32_t frame_a[PAGE_SIZE / 4] __attribute__((aligned(PAGE_SIZE)));
static volatile uint32_t frame_b[PAGE_SIZE / 4] __attribute__((aligned(PAGE_SIZE)));
static volatile uint32_t frame_c[PAGE_SIZE / 4] __attribute__((aligned(PAGE_SIZE)));
static volatile uint32_t frame_d[PAGE_SIZE / 4] __attribute__((aligned(PAGE_SIZE)));

#define TAG_A 0xAAAA0001u
#define TAG_B 0xBBBB0002u
#define TAG_C 0xCCCC0003u
#define TAG_D 0xDDDD0004u
#define WRITTEN 0x5EE0F00Du

static volatile uint32_t *const window = (volatile uint32_t *)WINDOW_VA;

// The last page fault: the handler records it and resumes at EDI.
static volatile uint32_t pf_count, pf_error, pf_cr2, pf_eip;

static void pf_trap(struct trap_frame *f)
{
	if (f->vector != PF_VECTOR)
		trap32_unexpected(f);
	pf_count++;
	pf_error = f->error;
	pf_cr2 = read_cr2();
	pf_eip = f->eip;
	f->eip = f->edi;
}

// Reads *p, which may fault: ESI holds the instruction's address, EDI
// where to go on (past it).  Returns what was read, or ~0 after a fault.
static uint32_t probe_read(volatile uint32_t *p)
{
	uint32_t v;

	__asm__ volatile("mov $1f, %%esi\n\t"
			 "mov $2f, %%edi\n\t"
			 "mov $0xFFFFFFFF, %0\n"
			 "1:\tmov (%1), %0\n"
			 "2:"
			 : "=&a"(v)
			 : "r"(p)
			 : "esi", "edi", "memory");
	return v;
}

// Writes v to *p, which may fault.
static void probe_write(volatile uint32_t *p, uint32_t v)
{
	__asm__ volatile("mov $1f, %%esi\n\t"
			 "mov $2f, %%edi\n"
			 "1:\tmovl %1, (%0)\n"
			 "2:"
			 :
			 : "r"(p), "r"(v)
			 : "esi", "edi", "memory");
}

static uint32_t leaf(volatile uint32_t *frame)
{
	return ADDR(frame) | LEAF;
}

static void build(void)
{
	paging32_identity(pd_a, pt_low, LEAF);
	paging32_identity(pd_b, pt_low, LEAF);
	for (unsigned i = 0; i < PT32_ENTRIES; i++)
		pt_a[i] = pt_b[i] = pt_c[i] = 0;
	pt_a[0] = leaf(frame_a);
	pt_b[0] = leaf(frame_b);
	pt_c[0] = leaf(frame_d);
	pt_a[1] = pt_b[1] = leaf(frame_c);
	pd_a[PDE_WINDOW] = ADDR(pt_a) | PTE_P | PTE_RW;
	pd_b[PDE_WINDOW] = ADDR(pt_b) | PTE_P | PTE_RW;
	frame_a[0] = TAG_A;
	frame_b[0] = TAG_B;
	frame_c[0] = TAG_C;
	frame_d[0] = TAG_D;
}

static void switches(void)
{
	paging32_enable(pd_a);
	check_eq("addrspace.cr3-a-maps-frame-a", *window, TAG_A);
	write_cr3(ADDR(pd_b));
	check_eq("addrspace.cr3-b-maps-frame-b", *window, TAG_B);
	write_cr3(ADDR(pd_a));
	check_eq("addrspace.cr3-back-to-a", *window, TAG_A);

	uint32_t sum = 0;
	for (unsigned i = 0; i < SWITCHES; i++) {
		write_cr3(ADDR(pd_b));
		sum += *window - TAG_B;
		write_cr3(ADDR(pd_a));
		sum += *window - TAG_A;
	}
	check_eq("addrspace.switch-loop-sees-each-space", sum, 0);
}

static void accessed_dirty(void)
{
	// The window was read, never written, in space A.
	check_field("addrspace.read-sets-accessed", "A", pt_a[0] & PTE_A, PTE_A);
	check_field("addrspace.read-leaves-dirty-clear", "D", pt_a[0] & PTE_D, 0);
	window[1] = WRITTEN;
	check_field("addrspace.write-sets-dirty", "D", pt_a[0] & PTE_D, PTE_D);
	check_eq("addrspace.write-lands-in-frame-a", frame_a[1], WRITTEN);
	// An OS ages pages by clearing A; the next use after INVLPG sets it again.
	pt_a[0] &= ~(PTE_A | PTE_D);
	invlpg(window);
	(void)*window;
	check_field("addrspace.accessed-set-again", "A", pt_a[0] & (PTE_A | PTE_D), PTE_A);
}

static void pte_writes(void)
{
	// Remap the window in the space in use: PTE write, INVLPG.
	pt_a[0] = leaf(frame_c);
	invlpg(window);
	check_eq("addrspace.pte-write-remaps", *window, TAG_C);
	window[2] = WRITTEN;
	check_eq("addrspace.write-through-new-mapping", frame_c[2], WRITTEN);
	check_eq("addrspace.old-frame-untouched", frame_a[2], 0);
	pt_a[0] = leaf(frame_a);
	invlpg(window);
	check_eq("addrspace.pte-write-maps-back", *window, TAG_A);

	// Change the space that is not loaded, then switch to it.
	pt_b[0] = leaf(frame_c);
	write_cr3(ADDR(pd_b));
	check_eq("addrspace.other-space-pte-write-seen", *window, TAG_C);
	write_cr3(ADDR(pd_a));
	pd_b[PDE_WINDOW] = ADDR(pt_c) | PTE_P | PTE_RW;
	write_cr3(ADDR(pd_b));
	check_eq("addrspace.other-space-pde-write-seen", *window, TAG_D);
	write_cr3(ADDR(pd_a));
	check_eq("addrspace.first-space-unchanged", *window, TAG_A);
}

static void faults(void)
{
	trap32_handler = pf_trap;
	// A missing page: the #PF is the kernel's, with CR2 = the address.
	pt_a[1] &= ~PTE_P;
	invlpg((void *)SECOND_VA);
	uint32_t v = probe_read((volatile uint32_t *)SECOND_VA);
	check_field("addrspace.missing-page-faults", "faults", pf_count, 1);
	check_field("addrspace.missing-page-cr2", "CR2", pf_cr2, SECOND_VA);
	check_field("addrspace.missing-page-error", "error", pf_error, 0);
	check_field("addrspace.missing-page-reads-nothing", "value", v, 0xFFFFFFFF);
	// Present again: the access succeeds (no stale "not present").
	pt_a[1] |= PTE_P;
	invlpg((void *)SECOND_VA);
	check_eq("addrspace.present-again-reads", probe_read((volatile uint32_t *)SECOND_VA),
		 TAG_C);

	// A read-only page under CR0.WP: a write is a protection fault.
	pt_a[1] &= ~PTE_RW;
	invlpg((void *)SECOND_VA);
	probe_write((volatile uint32_t *)SECOND_VA, WRITTEN);
	check_field("addrspace.read-only-write-faults", "faults", pf_count, 2);
	check_field("addrspace.read-only-error", "error", pf_error, PF_PRESENT | PF_WRITE);
	check_field("addrspace.read-only-unchanged", "value", frame_c[0], TAG_C);
	pt_a[1] |= PTE_RW;
	invlpg((void *)SECOND_VA);
	probe_write((volatile uint32_t *)SECOND_VA, WRITTEN);
	check_field("addrspace.writable-again", "faults", pf_count, 2);
	check_eq("addrspace.writable-again-lands", frame_c[0], WRITTEN);
	trap32_handler = trap32_unexpected;
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;
	gdt_init(0, 0);
	trap32_install(idt);
	build();
	switches();
	accessed_dirty();
	pte_writes();
	faults();
	return check_failures ? 1 : 0;
}
