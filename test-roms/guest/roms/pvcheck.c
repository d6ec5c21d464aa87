// rom: bad hypercalls: each gets its error code, and the guest carries on
//
// Runs only under Popek (docs/guest-abi.md).  Every hypercall here is
// wrong in one way the ABI names — an unknown number, a pointer outside
// RAM, a page-table update that maps memory the guest does not own or
// gives ring 3 a page the VMM relies on, a garbage trap table — and each
// check compares the error code the VMM returned.  The last check shows
// the guest still runs, with the VMM state its good calls left intact.
#include "cpu.h"
#include "popek.h"
#include "popek_pv.h"

#define ADDR(p) ((uint32_t)(uintptr_t)(p))
#define NOT_RAM 0xF0000000u	// far above the guest's RAM
#define USER_VA 0x00300000u	// a page the checks try to remap for ring 3

static struct tss32 tss;
static uint32_t page_dir[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint32_t page_table[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint32_t bad_dir[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint32_t bad_table[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));

// Hypercall nr with the stub's own number skipped: a call into the trap
// of stub 0 (after its 5-byte MOV EAX), so EAX can be any number at all.
static int32_t raw_call(uint32_t nr)
{
	int32_t ret = (int32_t)nr;

	__asm__ volatile("call *%[trap]"
			 : "+a"(ret)
			 : [trap] "r"(pv_hypercall_page + 5), "b"(0), "c"(0)
			 : "memory", "cc");
	return ret;
}

static int32_t err(int32_t e)
{
	return -e;
}

static void check_call(const char *name, int32_t got, int32_t want)
{
	check_eq(name, (uint32_t)got, (uint32_t)want);
}

// One update of the PTE of va to val.
static int32_t update(uint32_t va, uint32_t val)
{
	struct pv_mmu_update u = { ADDR(paging32_pte(page_dir, va)), val };

	return pv_call(HC_MMU_UPDATE, ADDR(&u), 1);
}

static void bad_calls_without_paging(void)
{
	check_call("pv-unknown-number", raw_call(HC_COUNT), err(PV_ENOSYS));
	check_call("pv-huge-number", raw_call(0xFFFFFFFFu), err(PV_ENOSYS));
	check_call("pv-console-outside-ram", pv_call(HC_CONSOLE_WRITE, NOT_RAM, 4),
		   err(PV_EFAULT));
	check_call("pv-console-too-long", pv_call(HC_CONSOLE_WRITE, ADDR(&tss), 1 << 20),
		   err(PV_EINVAL));
	check_call("pv-sched-bad-op", pv_call(HC_SCHED_OP, 7, 0), err(PV_EINVAL));
	check_call("pv-block-forever", pv_call(HC_SCHED_OP, SCHED_BLOCK, 0), err(PV_EDEADLK));
	check_call("pv-shared-info-unaligned", pv_call(HC_SHARED_INFO, 0x1234, 0),
		   err(PV_EINVAL));
	check_call("pv-shared-info-outside-ram", pv_call(HC_SHARED_INFO, NOT_RAM, 0),
		   err(PV_EINVAL));

	// Trap tables: a ring-3 code selector, unknown flags, no handler, a
	// table outside RAM, too many entries.
	struct pv_trap_info t = { 13, 0, SEL_UCODE32, 0x100000 };
	check_call("pv-trap-ring3-selector", pv_call(HC_SET_TRAP_TABLE, ADDR(&t), 1),
		   err(PV_EINVAL));
	t.cs = SEL_KCODE32;
	t.flags = 0x80;
	check_call("pv-trap-bad-flags", pv_call(HC_SET_TRAP_TABLE, ADDR(&t), 1),
		   err(PV_EINVAL));
	t.flags = 0;
	t.handler = 0;
	check_call("pv-trap-no-handler", pv_call(HC_SET_TRAP_TABLE, ADDR(&t), 1),
		   err(PV_EINVAL));
	check_call("pv-trap-table-outside-ram", pv_call(HC_SET_TRAP_TABLE, NOT_RAM, 1),
		   err(PV_EFAULT));
	check_call("pv-trap-table-too-long", pv_call(HC_SET_TRAP_TABLE, ADDR(&t), 1000),
		   err(PV_EINVAL));
	// Page-table calls need 32-bit paging's tables to check against.
	check_call("pv-mmu-base-unaligned", pv_call(HC_MMU_BASE, ADDR(page_dir) + 4, 0),
		   err(PV_EINVAL));
}

static void bad_page_tables(void)
{
	// A directory whose table maps memory outside RAM, then one that gives
	// ring 3 the hypercall page: refused before paging is on.
	paging32_identity(bad_dir, bad_table, PTE_P | PTE_RW);
	bad_table[USER_VA >> PAGE_SHIFT & (PT32_ENTRIES - 1)] = NOT_RAM | PTE_P;
	check_call("pv-base-maps-outside-ram", pv_call(HC_MMU_BASE, ADDR(bad_dir), 0),
		   err(PV_EACCES));
	bad_table[USER_VA >> PAGE_SHIFT & (PT32_ENTRIES - 1)] =
		ADDR(pv_hypercall_page) | PTE_P | PTE_US;
	check_call("pv-base-gives-ring3-hypercall-page",
		   pv_call(HC_MMU_BASE, ADDR(bad_dir), 0), err(PV_EACCES));

	paging32_identity(page_dir, page_table, PTE_P | PTE_RW);
	check_call("pv-mmu-base", pv_call(HC_MMU_BASE, ADDR(page_dir), 0), 0);

	uint32_t *pte = paging32_pte(page_dir, USER_VA), before = *pte;

	check_call("pv-update-outside-ram", update(USER_VA, NOT_RAM | PTE_P), err(PV_EACCES));
	check_call("pv-update-ring3-hypercall-page",
		   update(USER_VA, ADDR(pv_hypercall_page) | PTE_P | PTE_US), err(PV_EACCES));
	check_call("pv-update-ring3-shared-info",
		   update(USER_VA, ADDR(&pv_shared_page) | PTE_P | PTE_US), err(PV_EACCES));
	check_call("pv-update-ring3-page-table",
		   update(USER_VA, ADDR(page_table) | PTE_P | PTE_US), err(PV_EACCES));
	struct pv_mmu_update stray = { ADDR(&tss), PTE_P };
	check_call("pv-update-not-a-page-table", pv_call(HC_MMU_UPDATE, ADDR(&stray), 1),
		   err(PV_EINVAL));
	check_call("pv-update-batch-too-long",
		   pv_call(HC_MMU_UPDATE, ADDR(&stray), PV_MMU_UPDATE_MAX + 1), err(PV_EINVAL));
	// A batch is all or nothing: the good first entry is undone.
	struct pv_mmu_update batch[2] = {
		{ ADDR(pte), (ADDR(&tss) & PAGE_MASK) | PTE_P | PTE_RW },
		{ ADDR(pte), NOT_RAM | PTE_P },
	};
	check_call("pv-batch-refused-whole", pv_call(HC_MMU_UPDATE, ADDR(batch), 2),
		   err(PV_EACCES));
	check_eq("pv-batch-undone", *pte, before);
	check_call("pv-update-good", update(USER_VA, (USER_VA | PTE_P | PTE_RW | PTE_US)), 0);
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;
	if (pv_init()) {
		check_true("pv-init", 0, "Popek's hypercall interface is not there");
		return 1;
	}
	gdt_init(&tss, sizeof tss);
	bad_calls_without_paging();
	bad_page_tables();
	// The VMM counted the errors and went on; so did the guest, whose
	// console and shared-info page still work.
	pv_shared.events_masked = 0;
	check_true("pv-carried-on",
		   pv_call(HC_CONSOLE_WRITE, ADDR(""), 0) == 0 &&
		   pv_call(HC_SET_TIMER, 1, 0) == 0 && pv_shared.events_masked == 0,
		   "a good hypercall failed after the bad ones");
	return check_failures ? 1 : 0;
}
