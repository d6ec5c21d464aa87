/*
 * probe.h - what ROMs that probe the processor share: CPUID, and running an
 * instruction that may fault, to see whether (and where) it did.
 *
 * The ROM sets trap32_handler = trap32_record first: a fault inside TRY is
 * recorded in trap32_last and execution resumes after the probe.
 */
#ifndef POPEK_PROBE_H
#define POPEK_PROBE_H

#include "cpu.h"

struct cpuid {
	uint32_t eax, ebx, ecx, edx;
};

/* CPUID leaf `leaf`, sub-leaf `sub`. */
static inline struct cpuid cpuid_sub(uint32_t leaf, uint32_t sub)
{
	struct cpuid r;

	__asm__ volatile("cpuid"
			 : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx)
			 : "a"(leaf), "c"(sub));
	return r;
}

/* CPUID leaf `leaf` (sub-leaf 0). */
static inline struct cpuid cpuid(uint32_t leaf)
{
	return cpuid_sub(leaf, 0);
}

/* Runs setup, then insn (whose address goes to at), then after; setup
 * leaves EDI = the address after it all, where the trap handler resumes.
 * trap32_last says which exception insn or after raised, if any. */
#define TRY(at, setup, insn, after, ...)                                      \
	do {                                                                  \
		trap32_last.vector = TRAP_NONE;                               \
		__asm__ volatile("mov $1f, %%edi\n\t" setup "\n\t"            \
				 "mov $0f, %0\n"                              \
				 "0:\t" insn "\n\t" after "\n1:"              \
				 : "=&r"(at)                                  \
				 : __VA_ARGS__                                \
				 : "eax", "ecx", "edx", "edi", "memory", "cc"); \
	} while (0)

/* The instruction at `at` raised exception `vector` at its own address. */
static inline int raised_at(uint32_t vector, uint32_t at)
{
	return trap32_last.vector == vector && trap32_last.eip == at;
}

/* insn raised #UD at its own address. */
static inline int raised_ud(uint32_t at)
{
	return raised_at(VEC_UD, at);
}

#endif
