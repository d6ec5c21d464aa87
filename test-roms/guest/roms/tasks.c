// rom: hardware task switching: CALL to a TSS, IRET back, #DF through a task gate
//
// Two extra 32-bit tasks, as the 386 manuals teach the TSS: a CALL to the
// first nests it (back link, NT, busy bits), its IRET returns to the
// caller and a second CALL resumes it after that IRET; then a fault while
// delivering a fault (#GP, whose gate is not present: #NP) becomes a
// double fault, which a task gate hands to the second task on a stack of
// its own, with the error code on it.  That task reports and ends the run.
#include "cpu.h"
#include "popek.h"

#define SEL_TASK2 0x50		// GDT slots after the library's ten
#define SEL_DF 0x58
#define GDT_SLOTS 12
#define GATE_TASK 0x5
#define SYS_TSS_BUSY 0xB
#define DESC_TYPE(d) ((uint32_t)((d) >> 40) & 0xF)
#define CR0_TS 0x8
#define STACK_WORDS 1024
#define BAD_SELECTOR 0x1234	// beyond the GDT: #GP(0x1234)

static struct gate32 idt[IDT_VECTORS] __attribute__((aligned(8)));
static struct tss32 tss_main, tss_task2, tss_df;
static uint64_t big_gdt[GDT_SLOTS] __attribute__((aligned(8)));
static uint32_t stack2[STACK_WORDS], stack_df[STACK_WORDS];
static volatile uint32_t task2_runs;
extern const char faulting_load[];	// the MOV to DS that starts the #DF

static void task2(void)
{
	for (;;) {
		task2_runs++;
		__asm__ volatile("iret" : : : "memory");
	}
}

static void df_task(void)
{
	uint32_t error;

	__asm__ volatile("pop %0" : "=r"(error));
	check_eq("df-error-code-on-the-task-stack", error, 0);
	check_eq("df-back-link", tss_df.link, SEL_TSS);
	check_eq("df-old-task-saved-at-the-faulting-instruction", tss_main.eip,
		 (uint32_t)(uintptr_t)faulting_load);
	check_true("df-task-busy", DESC_TYPE(big_gdt[SEL_DF >> 3]) == SYS_TSS_BUSY, "not busy");
	popek_exit(check_failures ? 1 : 0);
}

static void task_init(struct tss32 *t, void (*entry)(void), uint32_t *stack)
{
	t->eip = (uint32_t)(uintptr_t)entry;
	t->eflags = FL_FIXED;
	t->esp = (uint32_t)(uintptr_t)(stack + STACK_WORDS);
	t->cs = SEL_KCODE32;
	t->ss = t->ds = t->es = t->fs = t->gs = SEL_KDATA;
}

static uint64_t tss_desc(const struct tss32 *t)
{
	return seg_desc((uint32_t)(uintptr_t)t, sizeof *t - 1, DESC_P | SYS_TSS_AVAIL, 0);
}

static void call_task2(void)
{
	__asm__ volatile("lcall %0, $0" : : "i"(SEL_TASK2) : "memory");
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;
	gdt_init(&tss_main, sizeof tss_main);
	for (unsigned i = 0; i < GDT_ENTRIES; i++)
		big_gdt[i] = gdt[i];
	task_init(&tss_task2, task2, stack2);
	task_init(&tss_df, df_task, stack_df);
	big_gdt[SEL_TASK2 >> 3] = tss_desc(&tss_task2);
	big_gdt[SEL_DF >> 3] = tss_desc(&tss_df);
	gdt_load(big_gdt, GDT_SLOTS);
	ltr(SEL_TSS);
	trap32_install(idt);

	call_task2();
	uint32_t flags;
	__asm__ volatile("pushf; pop %0" : "=r"(flags));
	check_eq("call-ran-the-task", task2_runs, 1);
	check_eq("call-wrote-the-back-link", tss_task2.link, SEL_TSS);
	check_true("iret-cleared-nt", !(flags & 0x4000), "NT still set");
	check_true("iret-freed-the-task", DESC_TYPE(big_gdt[SEL_TASK2 >> 3]) == SYS_TSS_AVAIL,
		   "still busy");
	check_true("switch-set-cr0-ts", read_cr0() & CR0_TS, "CR0.TS clear");
	__asm__ volatile("clts");
	call_task2();
	check_eq("second-call-resumed-after-iret", task2_runs, 2);

	// #GP through a gate that is not there: #NP, and two contributory
	// faults make a #DF, handled by its own task.
	idt32_set(idt, VEC_DF, 0, SEL_DF, GATE_TASK, DPL_KERNEL);
	idt[VEC_GP].type_attr &= (uint8_t)~DESC_P;
	__asm__ volatile(".globl faulting_load\nfaulting_load: mov %0, %%ds"
			 : : "r"((uint32_t)BAD_SELECTOR) : "memory");
	check_true("df-task-ran", 0, "came back from the double fault");
	return 1;
}
