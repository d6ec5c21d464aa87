# rom: long mode: 4-level paging, 64-bit IDT/TSS, SYSCALL/SYSRET to ring 3
#
# Starts as a Multiboot kernel in 32-bit protected mode and switches to
# 64-bit long mode the way the SDM describes (vol. 3, "Initializing IA-32e
# Mode"): page tables
# (lib/paging.c; the low 4 MiB identity-mapped, the first 2 MiB in 4 KiB
# pages, the rest in 2 MiB pages), CR4.PAE, CR3, EFER.LME, then CR0.PG,
# which activates long mode (EFER.LMA), and a far jump into a 64-bit code
# segment.  The 32-bit part calls the C library to build the GDT (lib/
# desc.c), IDT and page tables; the 64-bit part is assembly (gcc -m32
# cannot compile C to 64-bit code) using lib/long64.S.
#
# In 64-bit mode the kernel loads a 64-bit IDT and TSS (RSP0 for traps
# from ring 3, IST1 for #GP), checks RIP-relative addressing and 64-bit
# arithmetic, provokes a #GP with a non-canonical address, then SYSRETs
# into a ring-3 task that makes SYSCALLs and takes a #PF.  Every check is a
# PASS/FAIL line printed by the kernel (the task's through SYS_CHECK).
#include "cpu.h"
#include "ring3.h"

#define IDENTITY_SPAN 0x400000	/* map the low 4 MiB */
#define IST_GP 1		/* #GP runs on TSS.IST1 */
#define STACK_SIZE 4096
/* RFLAGS bits SYSCALL clears for the kernel, as Linux does. */
#define SYSCALL_MASKED_FLAGS (FL_IF | FL_DF | FL_TF | FL_AC)
/* Flags the task sets for its first SYSCALL, which FMASK must clear. */
#define USER_FLAGS_PROBE (FL_DF | FL_AC)
/* A 2 MiB page of the identity map, above the 4 KiB-page region. */
#define LARGE_PAGE_PROBE (LARGE_PAGE_2M + 0x12340)
#define PROBE_VALUE 0x0123456789ABCDEF

# CHECK name, got, want: a PASS/FAIL line from kernel code (check64).
# Any operands will do, except RSI for want (got is loaded there first).
.macro CHECK name, got, want
	.pushsection .rodata.longmode, "a"
.Lname\@: .asciz "\name"
	.popsection
	mov \got, %rsi
	mov \want, %rdx
	lea .Lname\@(%rip), %rdi
	call check64
.endm

# USER_CHECK name, got, want: the same from ring 3, through SYS_CHECK.
.macro USER_CHECK name, got, want
	.pushsection .user.rodata, "a"
.Luname\@: .asciz "\name"
	.popsection
	mov \got, %rsi
	mov \want, %rdx
	lea .Luname\@(%rip), %rdi
	mov $SYS_CHECK, %eax
	syscall
.endm

# EXPECT_FAULT at, resume, report: the instruction at `at` is to fault.
# The trap handler then calls `report` (RDI = the trap frame), which
# checks the fault, and continues at `resume`.
# (Symbols reach 64-bit registers through 32-bit moves, which zero-extend:
# ELF32 has no relocation for a sign-extended 32-bit immediate.)
.macro EXPECT_FAULT at, resume, report
	mov $\at, %eax
	mov %rax, expect_rip(%rip)
	mov $\resume, %eax
	mov %rax, expect_resume(%rip)
	mov $\report, %eax
	mov %rax, expect_report(%rip)
.endm

# ---- 32-bit protected mode: build the tables, enter long mode -----------
	.code32
	.section .text.longmode32, "ax"
	.globl main
main:
	# GDT with every segment lib/desc.c knows, the TSS among them.
	push $TSS64_SIZE
	push $tss64
	call gdt_init
	add $8, %esp
	# TSS: ring 0's stack for traps from ring 3, an IST stack, and an
	# I/O bitmap offset at the limit, i.e. no bitmap.  (The upper halves
	# of the 64-bit stack pointers are zero: the TSS is in .bss.)
	movl $kernel_stack_top, tss64 + TSS64_RSP0
	movl $ist_stack_top, tss64 + TSS64_IST(IST_GP)
	movw $TSS64_SIZE, tss64 + TSS64_IOMAP

	# IDT: every vector to its lib/long64.S stub; #GP on its own stack.
	push $idt64
	call trap64_fill
	add $4, %esp
	push $IST_GP
	push $DPL_KERNEL
	push $GATE_INT
	push $SEL_KCODE64
	push $(trap64_stubs + VEC_GP * TRAP_STUB_SIZE)
	push $VEC_GP
	push $idt64
	call idt64_set
	add $28, %esp

	# Page tables: everything supervisor-only but the .user pages.
	push $0			# leaf flags (uint64_t): high half
	push $(PTE_P | PTE_RW)
	push $IDENTITY_SPAN
	push $page_tables
	call paging64_identity
	add $16, %esp
	push $0			# clear (uint64_t)
	push $0
	push $0			# set (uint64_t)
	push $PTE_US
	push $__user_end
	push $__user_start
	push $page_tables
	call paging64_update
	add $28, %esp

	# SYSCALL/SYSRET: enable them, the selector bases (x86.h explains the
	# GDT order they imply), the entry point and the flags to clear.
	mov $MSR_EFER, %ecx
	rdmsr
	or $EFER_SCE, %eax
	wrmsr
	mov $MSR_STAR, %ecx
	xor %eax, %eax		# WRMSR writes EDX:EAX; STAR's fields are in EDX
	mov $(SEL_UCODE32 << (STAR_SYSRET_SHIFT - MSR_HIGH_SHIFT) | \
	      SEL_KCODE64 << (STAR_SYSCALL_SHIFT - MSR_HIGH_SHIFT)), %edx
	wrmsr
	mov $MSR_LSTAR, %ecx
	mov $syscall_entry, %eax
	xor %edx, %edx
	wrmsr
	mov $MSR_FMASK, %ecx
	mov $SYSCALL_MASKED_FLAGS, %eax
	xor %edx, %edx
	wrmsr

	# Into long mode: PAE paging structures, then LME, then paging on.
	push $CR0_WP
	push $page_tables
	call long_mode_enable
	add $8, %esp
	# Long mode is active but CS is still a 32-bit segment (compatibility
	# mode) until a far jump loads a 64-bit one.
	ljmp $SEL_KCODE64, $long_entry

# ---- 64-bit kernel -------------------------------------------------------
	.code64
	.section .text.longmode64, "ax"
long_entry:
	# Writing a 32-bit register zeroes the upper half: a clean RSP.
	mov $main_stack_top, %esp
	mov $SEL_KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %fs
	mov %eax, %gs
	mov %eax, %ss
	lidt idt64_ptr(%rip)	# the 64-bit IDTR holds a 64-bit base
	mov $SEL_TSS, %ax	# LTR in long mode reads the 16-byte descriptor
	ltr %ax
	mov $kernel_trap, %eax
	mov %rax, trap64_handler(%rip)

	mov $MSR_EFER, %ecx
	rdmsr
	and $(EFER_LME | EFER_LMA), %eax
	CHECK long-mode-active, %rax, $(EFER_LME | EFER_LMA)
	xor %eax, %eax
	mov %cs, %ax
	CHECK cs-64bit, %rax, $SEL_KCODE64

	# RIP-relative addressing: the displacement is from the next
	# instruction, so the address must match the absolute one.
	lea probe(%rip), %rax
	mov $probe, %ebx
	CHECK rip-relative-lea, %rax, %rbx
	mov probe(%rip), %rax
	CHECK rip-relative-load, %rax, $PROBE_VALUE

	# 64-bit arithmetic.
	mov $0xFFFFFFFF, %eax
	add $1, %rax
	CHECK arith64-add-carry, %rax, $0x100000000
	mov $0x0123456789ABCDEF, %rax
	mov $0xFEDCBA9876543210, %rcx
	mul %rcx
	mov %rdx, %rbx
	CHECK arith64-mul-low, %rax, $0x2236D88FE5618CF0
	CHECK arith64-mul-high, %rbx, $0x0121FA00AD77D742
	mov $1, %edx		# RDX:RAX = 2^64
	xor %eax, %eax
	mov $3, %ecx
	div %rcx
	mov %rdx, %rbx
	CHECK arith64-div-quotient, %rax, $0x5555555555555555
	CHECK arith64-div-remainder, %rbx, $1
	mov $0xABCDEF, %eax
	shl $40, %rax
	CHECK arith64-shl, %rax, $0xABCDEF0000000000
	mov $0x8000000000000000, %rax
	sar $63, %rax
	CHECK arith64-sar, %rax, $-1
	# A 32-bit result zero-extends into the whole register.
	mov $-1, %rax
	mov $0x80000000, %eax
	CHECK zero-extend-32, %rax, $0x80000000
	# R8-R15, the registers REX prefixes add: all distinct.
	mov $0x0100000000000001, %rax
	mov %rax, %r8
	lea (%r8,%rax), %r9
	lea (%r9,%rax), %r10
	lea (%r10,%rax), %r11
	lea (%r11,%rax), %r12
	lea (%r12,%rax), %r13
	lea (%r13,%rax), %r14
	lea (%r14,%rax), %r15
	mov %r8, %rax
	add %r9, %rax
	add %r10, %rax
	add %r11, %rax
	add %r12, %rax
	add %r13, %rax
	add %r14, %rax
	add %r15, %rax
	CHECK regs-r8-r15, %rax, $0x2400000000000024
	# PUSH and POP move RSP by 8.
	mov %rsp, %rbx
	push %rax
	sub %rsp, %rbx
	pop %rax
	CHECK push-8-bytes, %rbx, $8
	# Memory past the 4 KiB-page region is mapped by 2 MiB pages.
	mov $PROBE_VALUE, %rax
	mov %rax, LARGE_PAGE_PROBE
	mov LARGE_PAGE_PROBE, %rbx
	CHECK paging64-2m-page, %rbx, %rax

	# A non-canonical address: #GP(0), delivered on the IST1 stack.
	EXPECT_FAULT gp_at, gp_resume, report_gp
	movabs $NONCANONICAL_ADDR, %rax
	mov %rsp, fault_rsp(%rip)
gp_at:
	mov (%rax), %rax
gp_resume:
	call check_fault_taken

	# Into ring 3: SYSRET loads RIP from RCX and RFLAGS from R11 (IOPL 0,
	# interrupts off) but leaves RSP alone.  The task's #PF is expected.
	EXPECT_FAULT user_pf_at, user_pf_resume, report_user_pf
	mov $user_entry, %ecx
	mov $FL_FIXED, %r11d
	mov $user_stack_top, %esp
	sysretq

# The non-canonical access: IST1 holds the frame, which has the RSP of
# the faulting code (64-bit mode always saves SS:RSP).
report_gp:
	push %rbx
	mov %rdi, %rbx
	CHECK gp-noncanonical, TF64_VECTOR(%rbx), $VEC_GP
	CHECK gp-noncanonical-errcode, TF64_ERROR(%rbx), $0
	mov $(ist_stack_top - TF64_SIZE), %eax
	CHECK idt64-ist-stack, %rbx, %rax
	mov fault_rsp(%rip), %rax
	CHECK idt64-frame-rsp, TF64_RSP(%rbx), %rax
	pop %rbx
	ret

# The task's write to a supervisor page: a protection fault (present,
# write, user), the frame on TSS.RSP0's stack.
report_user_pf:
	push %rbx
	mov %rdi, %rbx
	CHECK pagefault64, TF64_VECTOR(%rbx), $VEC_PF
	CHECK pagefault64-errcode, TF64_ERROR(%rbx), $(PF_ERR_P | PF_ERR_W | PF_ERR_U)
	mov %cr2, %rax
	mov $kernel_target, %ecx
	CHECK pagefault64-cr2, %rax, %rcx
	CHECK pagefault64-cs, TF64_CS(%rbx), $(SEL_UCODE64 | RPL_USER)
	mov $(kernel_stack_top - TF64_SIZE), %eax
	CHECK pagefault64-rsp0, %rbx, %rax
	mov $user_stack_top, %eax
	CHECK pagefault64-user-rsp, TF64_RSP(%rbx), %rax
	pop %rbx
	ret

# After an expected fault's resume point: still armed means no fault.
check_fault_taken:
	cmpq $0, expect_rip(%rip)
	je 1f
	lea str_no_fault(%rip), %rdi
	xor %esi, %esi
	mov $1, %edx
	call check64
	movq $0, expect_rip(%rip)
1:	ret

# trap64_handler: an expected fault is reported and skipped, while any
# other trap is unexpected.
kernel_trap:
	mov TF64_RIP(%rdi), %rax
	cmp expect_rip(%rip), %rax
	jne trap64_unexpected
	movq $0, expect_rip(%rip)
	mov expect_resume(%rip), %rax
	mov %rax, TF64_RIP(%rdi)
	jmp *expect_report(%rip)

# SYSCALL saved RIP in RCX and RFLAGS in R11, loaded CS and SS from STAR
# and cleared the FMASK flags; it did not switch stacks, so the kernel
# does.  (With one task and no nesting, a fixed stack will do.)  Like
# Linux, the kernel preserves every register but RAX, RCX and R11.
syscall_entry:
	mov %rsp, user_rsp(%rip)
	mov $kernel_stack_top, %esp
	push %rcx		# user RIP
	push %r11		# user RFLAGS
	push %rdi
	push %rsi
	push %rdx
	push %r8
	push %r9
	push %r10
	push %rbx
	push %r12
	push %r13
	cmpb $0, seen_syscall(%rip)
	jne 1f
	movb $1, seen_syscall(%rip)
	call check_first_syscall
1:	mov %rax, %rbx		# the call number
	cmp $SYS_WRITE, %rbx
	je sys_write
	cmp $SYS_CHECK, %rbx
	je sys_check
	cmp $SYS_EXIT, %rbx
	je sys_exit
	lea str_bad_call(%rip), %rdi
	mov %rbx, %rsi
	xor %edx, %edx
	call check64
syscall_error:
	mov $SYS_ERROR, %eax
syscall_return:
	pop %r13
	pop %r12
	pop %rbx
	pop %r10
	pop %r9
	pop %r8
	pop %rdx
	pop %rsi
	pop %rdi
	pop %r11
	pop %rcx
	mov user_rsp(%rip), %rsp
	sysretq

# The first system call came with DF and AC set: SYSCALL must have saved
# them in R11 and cleared them for the kernel (FMASK), and RCX must point
# after a SYSCALL instruction.  (QEMU 7.2's TCG clears DF on every SYSCALL
# whatever FMASK says; AC shows FMASK at work there too.)
# Called with RCX, R11 as SYSCALL left them; keeps the call's RAX, RDI,
# RSI and RDX for the dispatch that follows.
check_first_syscall:
	push %rax
	push %rdi
	push %rsi
	push %rdx
	mov %rcx, %r12		# keep them across calls
	mov %r11, %r13
	pushfq			# RFLAGS as the kernel got them
	pop %rax
	and $USER_FLAGS_PROBE, %eax
	CHECK syscall-fmask, %rax, $0
	mov %r13, %rax
	and $USER_FLAGS_PROBE, %eax
	CHECK syscall-r11-rflags, %rax, $USER_FLAGS_PROBE
	movzwl -2(%r12), %eax
	CHECK syscall-rcx, %rax, $SYSCALL_INSN_WORD
	xor %eax, %eax
	mov %cs, %ax
	CHECK syscall-cs, %rax, $SEL_KCODE64
	mov %ss, %ax
	CHECK syscall-ss, %rax, $SEL_KDATA64
	pop %rdx
	pop %rsi
	pop %rdi
	pop %rax
	ret

sys_write:			# (RDI = string) -> its length
	call user_string
	test %rax, %rax
	jz syscall_error
	mov %rax, %rbx
	mov %rax, %rdi
	call puts64
	mov %rbx, %rdi
	call user_string_length
	jmp syscall_return

sys_check:			# (RDI = name, RSI = got, RDX = want)
	push %rsi
	push %rdx
	call user_string
	pop %rdx
	pop %rsi
	test %rax, %rax
	jz syscall_error
	mov %rax, %rdi
	call check64
	jmp syscall_return

sys_exit:			# (RDI = status)
	push %rdi
	call check_fault_taken	# the task's #PF must have happened
	pop %rdi
	xor %eax, %eax
	cmpl $0, check_failures(%rip)
	setne %al
	or %edi, %eax
	setne %al
	movzbl %al, %edi
	call exit64

# user_string(RDI): RDI if a NUL-terminated string lies wholly in the
# task's pages, else 0: ring 3 must not make the kernel read its memory.
user_string:
	mov %rdi, %rax
	mov $__user_start, %ecx
	mov $__user_end, %edx
1:	cmp %rcx, %rax
	jb 2f
	cmp %rdx, %rax
	jae 2f
	cmpb $0, (%rax)
	je 3f
	inc %rax
	jmp 1b
2:	xor %eax, %eax
	ret
3:	mov %rdi, %rax
	ret

# user_string_length(RDI = a string user_string accepted)
user_string_length:
	mov %rdi, %rax
1:	cmpb $0, (%rax)
	je 2f
	inc %rax
	jmp 1b
2:	sub %rdi, %rax
	ret

# ---- The ring-3 task ------------------------------------------------------
# Runs from the .user pages and reaches the kernel only through SYSCALL.
	.section .user.text, "ax"
user_entry:
	# The first SYSCALL goes with DF and AC set (see check_first_syscall),
	# and SYSRET must give them back from R11.  (AC has no effect here:
	# CR0.AM is clear.)
	pushfq
	orl $USER_FLAGS_PROBE, (%rsp)
	popfq
	lea user_msg(%rip), %rdi
	mov $SYS_WRITE, %eax
	syscall
	pushfq
	pop %rbx
	and $USER_FLAGS_PROBE, %ebx
	push %rbx
	xorl %ebx, (%rsp)	# clear them again
	popfq
	mov %rax, %r12
	USER_CHECK syscall-write-length, %r12, $(user_msg_end - user_msg - 1)
	USER_CHECK sysret-rflags, %rbx, $USER_FLAGS_PROBE
	xor %eax, %eax
	mov %cs, %ax
	USER_CHECK sysret-cs, %rax, $(SEL_UCODE64 | RPL_USER)
	mov %ss, %ax
	USER_CHECK sysret-ss, %rax, $(SEL_UDATA | RPL_USER)
	# A write to a supervisor page; the kernel checks the #PF and skips.
user_pf_at:
	movl $1, kernel_target(%rip)
user_pf_resume:
	xor %edi, %edi
	mov $SYS_EXIT, %eax
	syscall

	.section .user.rodata, "a"
user_msg: .asciz "PASS syscall-write\n"
user_msg_end:

	.section .user.data, "aw"
	.balign PAGE_SIZE
user_stack:
	.skip STACK_SIZE
user_stack_top:

# ---- Kernel data ------------------------------------------------------------
	.section .rodata.longmode, "a"
	.balign 8
probe: .quad PROBE_VALUE
idt64_ptr:
	.word IDT_VECTORS * GATE64_SIZE - 1	# limit
	.long idt64, 0			# 64-bit base
str_no_fault: .asciz "expected-fault (did it fault?)"
str_bad_call: .asciz "syscall: bad call number"

	.section .bss.longmode, "aw", @nobits
	.balign PAGE_SIZE
page_tables: .skip PAGING64_SIZE	# struct paging64
idt64: .skip IDT_VECTORS * GATE64_SIZE
tss64: .skip TSS64_SIZE
	.balign 16
	.skip STACK_SIZE
main_stack_top:
	.skip STACK_SIZE
kernel_stack_top:		# TSS.RSP0, and the SYSCALL stack
	.skip STACK_SIZE
ist_stack_top:			# TSS.IST1
	.balign 8
expect_rip: .skip 8		# the instruction that is to fault, or 0
expect_resume: .skip 8
expect_report: .skip 8
fault_rsp: .skip 8
user_rsp: .skip 8
kernel_target: .skip 8		# a supervisor page the task writes
seen_syscall: .skip 1
