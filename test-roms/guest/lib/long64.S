# long64.S - the 64-bit runtime of long-mode ROMs: output, checks, traps.
#
# gcc -m32 cannot compile C to 64-bit code, so a ROM's 64-bit side is
# assembly and these routines are its library.  The object is still ELF32
# (.code64 only changes the encoding), so absolute addresses are 32 bits:
# fine, everything lives far below 2 GiB, where a sign-extended 32-bit
# immediate or displacement reaches.
#
# Calling convention: System V AMD64, arguments in RDI, RSI, RDX, the
# result in RAX; RAX, RCX, RDX, RSI, RDI and R8-R11 may be clobbered.
#include "cpu.h"

	.code64
	.section .text.long64, "ax"

# putc64(DIL): sends one byte to COM1 once the transmitter has room.
	.globl putc64
putc64:
	mov $UART_LSR, %dx
1:	in %dx, %al
	test $UART_LSR_THRE, %al
	jz 1b
	mov %edi, %eax
	mov $UART_THR, %dx
	out %al, %dx
	ret

# puts64(RDI = NUL-terminated string)
	.globl puts64
puts64:
	push %rbx
	mov %rdi, %rbx
1:	movzbl (%rbx), %edi
	test %edi, %edi
	jz 2f
	call putc64
	inc %rbx
	jmp 1b
2:	pop %rbx
	ret

# puthex64(RDI): "0x" and 16 lower-case hex digits.
	.globl puthex64
puthex64:
	push %rbx
	push %r12
	mov %rdi, %rbx
	lea str_0x(%rip), %rdi
	call puts64
	mov $16, %r12d
1:	rol $4, %rbx		# the next digit into the low nibble
	mov %ebx, %eax
	and $0xF, %eax
	lea hex_digits(%rip), %rdi
	movzbl (%rdi,%rax), %edi
	call putc64
	dec %r12d
	jnz 1b
	pop %r12
	pop %rbx
	ret

# check64(RDI = name, RSI = got, RDX = want): prints "PASS name", or
# "FAIL name: got 0x.. want 0x.." and counts the failure in check_failures
# (lib/check.c: the 32-bit checks count there too).  Returns 1 if passed.
	.globl check64
check64:
	push %rbx
	push %r12
	push %r13
	mov %rdi, %rbx
	mov %rsi, %r12
	mov %rdx, %r13
	cmp %r12, %r13
	jne 1f
	lea str_pass(%rip), %rdi
	call puts64
	mov %rbx, %rdi
	call puts64
	mov $1, %r12d
	jmp 2f
1:	incl check_failures(%rip)
	lea str_fail(%rip), %rdi
	call puts64
	mov %rbx, %rdi
	call puts64
	lea str_got(%rip), %rdi
	call puts64
	mov %r12, %rdi
	call puthex64
	lea str_want(%rip), %rdi
	call puts64
	mov %r13, %rdi
	call puthex64
	xor %r12d, %r12d
2:	mov $'\n', %edi
	call putc64
	mov %r12, %rax
	pop %r13
	pop %r12
	pop %rbx
	ret

# exit64(EDI = status): ends the run through the debug-exit device.
	.globl exit64
exit64:
	mov %edi, %eax
	mov $DEBUG_EXIT_PORT, %dx
	out %eax, %dx
1:	cli			# no debug-exit device: park the CPU
	hlt
	jmp 1b

# ---- Traps ----------------------------------------------------------------
# Every stub makes the stack look the same (a dummy error code where the
# CPU pushes none, then the vector); the common code saves the general
# registers below, making a struct trap_frame64 (cpu.h's TF64_* offsets),
# and calls *trap64_handler(RDI = frame).  Returning loads the frame back,
# so a handler may change RIP or any register.  In long mode the CPU
# always pushes SS:RSP and aligns RSP to 16 first, so the frame is always
# the same size, and TF64_SIZE keeps the call 16-byte aligned.
	.globl trap64_stubs
	.balign TRAP_STUB_SIZE
trap64_stubs:
	TRAP_STUBS trap64_common

trap64_common:
	push %r15
	push %r14
	push %r13
	push %r12
	push %r11
	push %r10
	push %r9
	push %r8
	push %rbp
	push %rdi
	push %rsi
	push %rdx
	push %rcx
	push %rbx
	push %rax
	mov %rsp, %rdi
	cld			# the ABI expects DF clear
	call *trap64_handler(%rip)
	pop %rax
	pop %rbx
	pop %rcx
	pop %rdx
	pop %rsi
	pop %rdi
	pop %rbp
	pop %r8
	pop %r9
	pop %r10
	pop %r11
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	add $16, %rsp		# vector and error code
	iretq

# The default trap handler: a FAIL line naming the trap, then exit 1.
	.globl trap64_unexpected
trap64_unexpected:
	mov %rdi, %rbx
	lea str_unexpected(%rip), %rdi
	call puts64
	mov TF64_VECTOR(%rbx), %rdi
	call puthex64
	lea str_error(%rip), %rdi
	call puts64
	mov TF64_ERROR(%rbx), %rdi
	call puthex64
	lea str_rip(%rip), %rdi
	call puts64
	mov TF64_RIP(%rbx), %rdi
	call puthex64
	lea str_cr2(%rip), %rdi
	call puts64
	mov %cr2, %rdi
	call puthex64
	mov $'\n', %edi
	call putc64
	mov $1, %edi
	call exit64

	.section .data.long64, "aw"
	.balign 8
# The 64-bit routine every trap calls; a ROM points it at its own.
	.globl trap64_handler
trap64_handler:
	.long trap64_unexpected, 0	# a 64-bit pointer, in ELF32 terms

	.section .rodata.long64, "a"
hex_digits: .ascii "0123456789abcdef"
str_0x: .asciz "0x"
str_pass: .asciz "PASS "
str_fail: .asciz "FAIL "
str_got: .asciz ": got "
str_want: .asciz " want "
str_unexpected: .asciz "FAIL unexpected-trap: vector "
str_error: .asciz " error "
str_rip: .asciz " rip "
str_cr2: .asciz " cr2 "
