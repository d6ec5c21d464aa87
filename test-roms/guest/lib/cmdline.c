// cmdline.c - reading "key=N" settings from the Multiboot command line.
#include "popek.h"

const char *mb_cmdline(const struct multiboot_info *mbi)
{
	if (!mbi || !(mbi->flags & MULTIBOOT_INFO_CMDLINE) || !mbi->cmdline)
		return "";
	// Paging is off, so the physical address is also the pointer.
	return (const char *)(uintptr_t)mbi->cmdline;
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n';
}

// If word starts with "key=", returns what follows the '=', else NULL.
static const char *match_key(const char *word, const char *key)
{
	while (*key)
		if (*word++ != *key++)
			return 0;
	return *word == '=' ? word + 1 : 0;
}

const char *cmdline_value(const struct multiboot_info *mbi, const char *key)
{
	const char *line = mb_cmdline(mbi);

	// QEMU passes "<kernel path> <-append text>", so look at every word,
	// and only at word starts so "xiters=5" never matches "iters".
	for (const char *s = line; *s; s++) {
		if (s != line && !is_space(s[-1]))
			continue;
		const char *v = match_key(s, key);
		if (v)
			return v;
	}
	return 0;
}

int cmdline_value_is(const char *v, const char *word)
{
	while (*word)
		if (*v++ != *word++)
			return 0;
	return !*v || is_space(*v);
}

unsigned long cmdline_ulong(const struct multiboot_info *mbi, const char *key,
			    unsigned long dflt)
{
	const char *v = cmdline_value(mbi, key);

	if (!v || *v < '0' || *v > '9')
		return dflt;
	unsigned long n = 0;
	for (; *v >= '0' && *v <= '9'; v++) {
		unsigned long d = (unsigned long)(*v - '0');
		// Saturate rather than wrap: a huge N must stay huge.
		n = n > (~0ul - d) / 10 ? ~0ul : n * 10 + d;
	}
	return n;
}
