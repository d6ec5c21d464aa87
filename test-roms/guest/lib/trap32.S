# trap32.S - protected-mode entry stubs for every IDT vector, and SYSENTER.
#
# Each stub makes the stack look the same whatever the vector (it pushes a
# dummy error code where the CPU pushes none, then the vector), and the
# common code saves every register as a struct trap_frame (cpu.h) and calls
# trap32_handler with a pointer to it.  Returning loads the frame back, so
# a handler can resume the interrupted code anywhere, with any registers.
#include "cpu.h"

# Saves the general and data segment registers below the vector and error
# code, switches to kernel data segments and calls trap32_handler(frame).
.macro SAVE_AND_CALL
	pusha
	# A 32-bit push of a segment register may leave bits 31:16 of the
	# slot unchanged: only the low 16 bits of those frame fields count.
	push %ds
	push %es
	push %fs
	push %gs
	# Ring-3 data selectors are usable in ring 0 too, but the kernel
	# should not depend on what the interrupted code had loaded.
	mov $SEL_KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	cld			# the C ABI expects DF clear
	push %esp		# the struct trap_frame * argument
	call *trap32_handler
	add $4, %esp
.endm

# Undoes SAVE_AND_CALL and drops the vector and error code.
.macro RESTORE
	pop %gs
	pop %fs
	pop %es
	pop %ds
	popa
	add $8, %esp
.endm

	.section .text.trap32, "ax"
	.code32
	.globl trap32_stubs
	.balign TRAP_STUB_SIZE
trap32_stubs:
	TRAP_STUBS trap32_common

trap32_common:
	SAVE_AND_CALL
	RESTORE
	iret

# SYSENTER loads CS, SS, ESP and EIP from the SYSENTER MSRs and clears IF,
# saving nothing: by convention user code passes its ESP in ECX and its
# return address in EDX, which SYSEXIT loads into ESP and EIP.  Rebuild
# the frame an INT from ring 3 would have left, so handlers see one layout.
	.globl sysenter_entry
sysenter_entry:
	push $(SEL_UDATA | RPL_USER)	# user_ss: SYSEXIT's SS
	push %ecx			# user_esp
	pushf
	push $(SEL_UCODE32 | RPL_USER)	# cs: SYSEXIT's CS
	push %edx			# eip
	push $0				# error code
	pushl $TRAP_SYSENTER		# vector
	SAVE_AND_CALL
	RESTORE
	pop %edx		# eip, possibly changed by the handler
	add $4, %esp		# cs: SYSEXIT makes it SEL_UCODE32 | 3 anyway
	popf
	pop %ecx		# user_esp
	add $4, %esp		# user_ss
	sysexit
