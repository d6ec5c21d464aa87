# rom: BIOS image: real-mode checks from the reset vector, then protected mode
# rom-boot: bios
#
# Unlike the other ROMs this is not a Multiboot kernel but the firmware
# itself.  The PC maps the 64 KiB image at 0xF0000 and just below 4 GiB and
# the CPU starts at F000:FFF0 in real mode, with nothing set up: no stack,
# no interrupt vectors, a serial port nobody initialised (QEMU's, like
# Popek's, sends bytes whatever the baud rate).  The image is ROM, so every
# byte it writes lives in RAM: the stack, .bss (lib/bios.ld) and the test
# data.  Interrupts stay off throughout: nothing has programmed the PIC, so
# an IRQ would arrive through a zero vector.
#
# The real-mode checks are printed from 16-bit code; then the ROM switches
# to 32-bit protected mode and prints the rest with the C library.
#include "x86.h"

#define STACK_TOP 0x7000	/* both modes' stack: free RAM below .bss */

# Segment arithmetic: linear = segment * 16 + offset, so many
# segment:offset pairs name the same byte.
#define TEST_SEG 0x1000		/* data segment for the test words */
#define TEST_OFF 0x0234		/* 1000:0234 is linear 0x10234 */
#define TEST_LINEAR ((TEST_SEG << PARA_SHIFT) + TEST_OFF)
#define ALIAS_SEG (TEST_LINEAR >> PARA_SHIFT)	/* 1023:0004, the same byte */
#define ALIAS_OFF (TEST_LINEAR & 0xF)
#define TEST_WORD 0xBEEF
#define HIGH_OFF 0xFFFE		/* the last word of segment TEST_SEG... */
#define HIGH_LINEAR ((TEST_SEG << PARA_SHIFT) + HIGH_OFF)
#define HIGH_SEG (HIGH_LINEAR >> PARA_SHIFT)	/* ...is 1FFF:000E */
#define HIGH_ALIAS_OFF (HIGH_LINEAR & 0xF)
#define HIGH_WORD 0x5AA5

#define INT_TEST 0x42		/* a vector no CPU exception uses */
#define INT_MAGIC 0x4242	/* what its handler returns in AX */

#define PM_TEST_ADDR 0x300000	/* above 1 MiB, beyond real mode's reach */
#define PM_TEST_VALUE 0x600DCAFE

# ---- Reset vector -----------------------------------------------------
	.section .reset, "ax"
	.code16
	.globl bios_reset
bios_reset:
	# CS has base 0xFFFF0000 until the first far jump loads it; from then
	# on it is ordinary real mode with the image at F000:0000.
	ljmp $RESET_CS, $start16

# ---- Real mode ----------------------------------------------------------
# Linked at offsets from the image base (lib/bios.ld), since CS = 0xF000.
	.section .text16, "ax"
	.code16
start16:
	cld
	xor %ax, %ax
	mov %ax, %ss		# the CPU holds off interrupts for one
	mov $STACK_TOP, %sp	# instruction after a load of SS
	mov %ax, %ds		# DS = ES = 0: .bss and the IVT are at
	mov %ax, %es		# offsets equal to their linear addresses
	# RAM holds anything at power-on; lib/check.c's counter is in .bss.
	mov $__bss_start, %di
	mov $__bss_end, %cx
	sub %di, %cx
	rep stosb

	call test_segments
	call test_ivt
	call test_pushf_popf
	call test_iret
	jmp enter_protected_mode

# Two segment:offset pairs for one linear address see the same memory.
# The tests keep DS = 0 and use ES and FS for the data segments.
test_segments:
	mov $TEST_SEG, %ax
	mov %ax, %es
	movw $TEST_WORD, %es:TEST_OFF
	mov $ALIAS_SEG, %ax
	mov %ax, %fs
	mov %fs:ALIAS_OFF, %ax
	mov $TEST_WORD, %bx
	mov $name_segments, %si
	call check16
	# The other way round, at the top of the segment.
	mov $HIGH_SEG, %ax
	mov %ax, %fs
	movw $HIGH_WORD, %fs:HIGH_ALIAS_OFF
	mov %es:HIGH_OFF, %ax
	mov $HIGH_WORD, %bx
	mov $name_segments_high, %si
	call check16
	xor %ax, %ax
	mov %ax, %es
	mov %ax, %fs
	ret

# INT n through a vector we install: the handler records the frame INT
# pushed (FLAGS, CS, IP) and clears CF in the saved FLAGS, the way BIOS
# services report success, so IRET has to restore FLAGS from the stack.
test_ivt:
	movw $int_test_handler, INT_TEST * IVT_ENTRY_SIZE	# offset
	movw %cs, INT_TEST * IVT_ENTRY_SIZE + 2			# segment
	xor %ax, %ax
	stc			# for the handler to find in the saved FLAGS
	int $INT_TEST
int_test_return:
	pushf			# CF, as IRET left it
	mov $INT_MAGIC, %bx
	mov $name_ivt, %si
	call check16
	mov int_saved_ip, %ax
	mov $int_test_return, %bx
	mov $name_int_ip, %si
	call check16
	mov int_saved_cs, %ax
	mov $RESET_CS, %bx
	mov $name_int_cs, %si
	call check16
	mov int_saved_flags, %ax
	and $FL_CF, %ax
	mov $FL_CF, %bx
	mov $name_int_flags, %si
	call check16
	pop %ax
	and $FL_CF, %ax
	xor %bx, %bx
	mov $name_iret_flags, %si
	call check16
	ret

int_test_handler:
	push %bp
	mov %sp, %bp
	mov 2(%bp), %ax		# the frame: IP, CS, FLAGS
	mov %ax, int_saved_ip
	mov 4(%bp), %ax
	mov %ax, int_saved_cs
	mov 6(%bp), %ax
	mov %ax, int_saved_flags
	andw $~FL_CF, 6(%bp)
	pop %bp
	mov $INT_MAGIC, %ax
	iret

# POPF loads the status flags from the stack and PUSHF stores them back:
# start with all six set, then load a pattern with some clear.
test_pushf_popf:
	pushw $(FL_FIXED | FL_STATUS)
	popf
	pushw $(FL_FIXED | FL_CF | FL_ZF | FL_SF | FL_OF)
	popf
	pushf
	pop %ax
	and $FL_STATUS, %ax
	mov $(FL_CF | FL_ZF | FL_SF | FL_OF), %bx
	mov $name_pushf_popf, %si
	call check16
	ret

# IRET pops IP, CS and FLAGS: hand-build the frame INT would leave.
test_iret:
	mov %sp, %dx
	pushw $(FL_FIXED | FL_PF | FL_AF)	# FLAGS
	push %cs
	pushw $1f				# IP
	iret
1:	pushf
	pop %ax
	and $FL_STATUS, %ax
	mov $(FL_PF | FL_AF), %bx
	mov $name_iret, %si
	call check16
	mov %sp, %ax		# IRET took all three words back
	mov %dx, %bx
	mov $name_iret_stack, %si
	call check16
	ret

# Leaves real mode: the GDT holds flat 32-bit code and data (bios.ld links
# it at its linear address, which LGDT wants), CR0.PE turns protection on,
# and a far jump loads CS with a selector.
enter_protected_mode:
	lgdtl %cs:gdt_ptr
	mov %cr0, %eax
	or $CR0_PE, %eax
	mov %eax, %cr0
	ljmpl $SEL_KCODE32, $protected_entry

gdt_ptr:
	.word gdt_end - gdt - 1
	.long gdt

# ---- 16-bit output --------------------------------------------------------
# check16: prints "PASS <name>" when AX == BX, else "FAIL <name>: got 0x..
# want 0x.." and counts the failure in check_failures (lib/check.c), which
# the protected-mode part reads.  SI points at the name, in the image.
check16:
	push %si
	cmp %bx, %ax
	jne 1f
	mov $str_pass, %si
	call puts16
	pop %si
	call puts16
	jmp 2f
1:	addl $1, check_failures
	mov $str_fail, %si
	call puts16
	pop %si
	call puts16
	mov $str_got, %si
	call puts16
	call puthex16
	mov $str_want, %si
	call puts16
	mov %bx, %ax
	call puthex16
2:	mov $'\n', %al
	call putc16
	ret

# Prints the NUL-terminated string at CS:SI (the strings are in the image).
puts16:
	push %ax
	push %si
1:	lodsb %cs:(%si), %al
	test %al, %al
	jz 2f
	call putc16
	jmp 1b
2:	pop %si
	pop %ax
	ret

# Prints AX as four hex digits.
puthex16:
	push %ax
	push %bx
	push %cx
	mov %ax, %bx
	mov $4, %cx
1:	rol $4, %bx		# next digit into the low nibble
	mov %bl, %al
	and $0xF, %al
	add $'0', %al
	cmp $'9', %al
	jbe 2f
	add $('a' - '9' - 1), %al
2:	call putc16
	loop 1b
	pop %cx
	pop %bx
	pop %ax
	ret

# Sends AL to COM1 once the transmitter has room.
putc16:
	push %dx
	push %ax
	mov $UART_LSR, %dx
1:	in %dx, %al
	test $UART_LSR_THRE, %al
	jz 1b
	pop %ax
	mov $UART_THR, %dx
	out %al, %dx
	pop %dx
	ret

str_pass: .asciz "PASS "
str_fail: .asciz "FAIL "
str_got: .asciz ": got 0x"
str_want: .asciz " want 0x"
name_segments: .asciz "realmode-segments"
name_segments_high: .asciz "realmode-segments-high"
name_ivt: .asciz "realmode-ivt"
name_int_ip: .asciz "realmode-int-return-ip"
name_int_cs: .asciz "realmode-int-return-cs"
name_int_flags: .asciz "realmode-int-pushes-flags"
name_iret_flags: .asciz "realmode-iret-restores-flags"
name_pushf_popf: .asciz "realmode-pushf-popf"
name_iret: .asciz "realmode-iret"
name_iret_stack: .asciz "realmode-iret-stack"

# ---- 32-bit protected mode ------------------------------------------------
	.section .text.realmode32, "ax"
	.code32
protected_entry:
	# The data segment registers still hold real-mode segments.
	mov $SEL_KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %fs
	mov %eax, %gs
	mov %eax, %ss
	mov $STACK_TOP, %esp

	mov %cr0, %eax
	and $CR0_PE, %eax
	push $CR0_PE
	push %eax
	push $name_pm_entry
	call check_eq
	add $12, %esp

	xor %eax, %eax
	mov %cs, %ax
	push $SEL_KCODE32
	push %eax
	push $name_pm_cs
	call check_eq
	add $12, %esp

	# Flat segments: the word real mode wrote at 1000:0234 is at its
	# linear address...
	movzwl TEST_LINEAR, %eax
	push $TEST_WORD
	push %eax
	push $name_pm_flat
	call check_eq
	add $12, %esp

	# ...and memory above 1 MiB is now in reach.
	movl $PM_TEST_VALUE, PM_TEST_ADDR
	push $PM_TEST_VALUE
	push PM_TEST_ADDR
	push $name_pm_high
	call check_eq
	add $12, %esp

	xor %eax, %eax
	cmpl $0, check_failures
	setne %al
	push %eax
	call popek_exit

	.section .rodata.realmode, "a"
name_pm_entry: .asciz "protected-mode-entry"
name_pm_cs: .asciz "protected-mode-cs"
name_pm_flat: .asciz "protected-mode-flat-data"
name_pm_high: .asciz "protected-mode-above-1mib"

# Flat 4 GiB segments: base 0, limit 0xFFFFF pages.  (Descriptor layout:
# limit 15:0, base 23:0, access byte, limit 19:16 with the flags nibble,
# base 31:24.)
.macro FLAT_DESC access, flags
	.word DESC_LIMIT_4G & 0xFFFF
	.word 0
	.byte 0
	.byte \access
	.byte (DESC_LIMIT_4G >> 16) | (\flags << 4)
	.byte 0
.endm

	.balign 8
gdt:
	.quad 0			# the null descriptor
	.org gdt + SEL_KCODE32
	FLAT_DESC (DESC_P | DESC_S | DESC_CODE | DESC_RW), (DESC_G | DESC_DB)
	.org gdt + SEL_KDATA
	FLAT_DESC (DESC_P | DESC_S | DESC_RW), (DESC_G | DESC_DB)
gdt_end:

	.bss
int_saved_ip: .skip 2
int_saved_cs: .skip 2
int_saved_flags: .skip 2
