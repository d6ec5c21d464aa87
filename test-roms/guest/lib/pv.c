// pv.c - the guest side of Popek's para-virtualization ABI (popek_pv.h).
#include "popek.h"
#include "popek_pv.h"
#include "x86.h"

#define PAGE 4096
// The console is line-buffered: one hypercall per line, not per byte.
#define LINE_MAX 128

uint8_t pv_hypercall_page[PAGE] __attribute__((aligned(PAGE)));
union pv_shared_page pv_shared_page __attribute__((aligned(PAGE)));

static char line[LINE_MAX];
static unsigned line_len;
static void (*event_handler)(uint32_t pending);

int pv_detect(void)
{
	uint32_t a = PV_LEAF_SIGNATURE, sig[3];

	__asm__ volatile("cpuid" : "+a"(a), "=b"(sig[0]), "=c"(sig[1]), "=d"(sig[2]));
	const char *want = PV_SIGNATURE;
	const char *got = (const char *)sig;
	for (int i = 0; i < 12; i++)
		if (got[i] != want[i])
			return 0;
	return a >= PV_LEAF_INTERFACE;
}

static void flush_line(void)
{
	if (line_len)
		pv_call(HC_CONSOLE_WRITE, (uint32_t)(uintptr_t)line, line_len);
	line_len = 0;
}

static void pv_putc(char c)
{
	line[line_len++] = c;
	if (c == '\n' || line_len == LINE_MAX)
		flush_line();
}

static void pv_exit(int status)
{
	flush_line();
	pv_call(HC_SHUTDOWN, (uint32_t)status, 0);
}

int pv_init(void)
{
	if (!pv_detect())
		return -1;
	wrmsr(PV_MSR_HYPERCALL_PAGE, (uint32_t)(uintptr_t)pv_hypercall_page);
	if (pv_call(HC_SHARED_INFO, (uint32_t)(uintptr_t)&pv_shared_page, 0))
		return -1;
	serial_putc_hook = pv_putc;
	popek_exit_hook = pv_exit;
	return 0;
}

// The event callback the VMM enters: a call from wherever the guest was,
// so it saves every register and the flags.  Runs with events masked.
void pv_event_entry(void);
__asm__(".pushsection .text.pv_event_entry\n"
	".globl pv_event_entry\n"
	"pv_event_entry:\n\t"
	"pushfl\n\t"
	"pushal\n\t"
	"call pv_event_dispatch\n\t"
	"popal\n\t"
	"popfl\n\t"
	"ret\n"
	".popsection");

void pv_event_dispatch(void);
void pv_event_dispatch(void)
{
	uint32_t pending = pv_shared.events_pending;

	pv_shared.events_pending = 0;
	if (event_handler)
		event_handler(pending);
	pv_events_unmask();
}

int32_t pv_set_event_handler(void (*handler)(uint32_t pending))
{
	event_handler = handler;
	return pv_call(HC_SET_CALLBACK, (uint32_t)(uintptr_t)pv_event_entry, 0);
}

void pv_events_unmask(void)
{
	pv_shared.events_masked = 0;
	// An event that came while masked waits for the next VMM entry: make one.
	if (pv_shared.events_pending)
		pv_call(HC_SCHED_OP, SCHED_YIELD, 0);
}
