/*
 * ring3.h - the system calls the kernels of the rings and longmode ROMs
 * offer their ring-3 tasks.
 *
 * 32-bit tasks call through INT SYSCALL_VECTOR or SYSENTER with the number
 * in EAX and the arguments in EBX, ESI and EDI (SYSENTER itself uses ECX
 * and EDX); 64-bit tasks use SYSCALL with RAX and RDI, RSI, RDX (SYSCALL
 * uses RCX and R11).  The result comes back in EAX/RAX.  Pointers must
 * point into the task's own pages.
 */
#ifndef POPEK_RING3_H
#define POPEK_RING3_H

#define SYSCALL_VECTOR 0x80	/* the INT n gate ring 3 may use */

#define SYS_WRITE 1	/* (string): prints it; returns its length */
#define SYS_CHECK 2	/* (name, got, want): "PASS name" or "FAIL name: .." */
#define SYS_GETCS 3	/* (): the CS saved when the call entered the kernel */
#define SYS_EXPECT 4	/* (struct fault_expect *): the next fault is a test */
#define SYS_EXIT 5	/* (status): ends the run, failing if status != 0 */

#define SYS_ERROR 0xFFFFFFFF	/* what a bad call returns */

#endif
