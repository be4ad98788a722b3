# probe.S: which instructions that a stock Linux kernel runs early at boot
# can this host's KVM execute? (An informational probe for `make e2e`.)
#
# It enters 64-bit long mode the way Linux's startup_32
# (arch/x86/boot/compressed/head_64.S) does: identity page tables (here the
# first 1 GiB with 2 MiB pages), CR4.PAE, CR3, EFER.LME, CR0.PG, then a far
# jump to a 64-bit code segment. Then it tries, in order:
#  * XSAVE (fpu__init_cpu_xstate / fpu__init_system_xstate): CR4.OSXSAVE,
#    XSETBV(XCR0 = x87|SSE), XSAVE and XRSTOR on a 64-byte-aligned area;
#  * CMPXCHG16B (SLUB's cmpxchg_double);
#  * INT3 through a 64-bit IDT gate whose handler returns with IRETQ (the
#    int3 self-test every boot runs, int3_selftest in alternative.c).
# Each step prints "PROBE <feature> try" before and "PROBE <feature> ok"
# after, so the host can tell from the serial output how far it got: on a
# host whose KVM cannot run an instruction, KVM stops the VM with an internal
# error and the last line names the failing instruction. Steps whose CPUID
# bit is clear print "PROBE <feature> skipped". When everything works it
# prints "PROBE all ok" and PASSes.
#
# Command line options: "noxsave" (as Linux's), "nocx16" and "noint3" skip
# a step, so a host can probe the later ones too.

        .include "lib.inc"
        GUEST probe

        .set CR0_MP, 1 << 1
        .set CR0_EM, 1 << 2
        .set CR0_TS, 1 << 3
        .set CR0_PG, 1 << 31
        .set CR4_PAE, 1 << 5
        .set CR4_OSFXSR, 1 << 9
        .set CR4_OSXMMEXCPT, 1 << 10
        .set CR4_OSXSAVE, 1 << 18
        .set MSR_EFER, 0xc0000080
        .set EFER_LME, 1 << 8
        .set CPUID1_ECX_CX16, 1 << 13
        .set CPUID1_ECX_XSAVE, 1 << 26

        .text
        .code32
guest_main:
        PUTS "PROBE start\n"

        # Read the command line while still in 32-bit mode.
        movl $opt_noxsave, %esi
        call cmdline_has
        movl %eax, skip_xsave
        movl $opt_nocx16, %esi
        call cmdline_has
        movl %eax, skip_cx16
        movl $opt_noint3, %esi
        call cmdline_has
        movl %eax, skip_int3

        # Enter long mode (head_64.S: startup_32).
        PUTS "PROBE longmode try\n"
        movl %cr4, %eax
        orl $CR4_PAE, %eax
        movl %eax, %cr4
        movl $pml4, %eax
        movl %eax, %cr3
        movl $MSR_EFER, %ecx
        rdmsr
        orl $EFER_LME, %eax
        wrmsr
        movl %cr0, %eax
        orl $CR0_PG, %eax
        movl %eax, %cr0
        ljmp $SEL_CODE64, $long_mode

        .code64
long_mode:
        movl $SEL_DATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        movl $stack_top, %esp           # zero-extends into RSP
        PUTS64 "PROBE longmode ok\n"

        # FPU/SSE set-up as fpu__init_cpu does: EM=0, TS=0, MP=1,
        # OSFXSR|OSXMMEXCPT.
        movq %cr0, %rax
        andq $~(CR0_EM | CR0_TS), %rax
        orq $CR0_MP, %rax
        movq %rax, %cr0
        movq %cr4, %rax
        orq $(CR4_OSFXSR | CR4_OSXMMEXCPT), %rax
        movq %rax, %cr4

        movl $1, %eax
        xorl %ecx, %ecx
        cpuid
        movl %ecx, cpuid1_ecx

        # --- XSAVE -----------------------------------------------------
        cmpl $0, skip_xsave
        je 1f
        PUTS64 "PROBE xsave skipped (noxsave)\n"
        jmp 3f
1:      testl $CPUID1_ECX_XSAVE, cpuid1_ecx
        jnz 2f
        PUTS64 "PROBE xsave skipped (CPUID.1:ECX.XSAVE=0)\n"
        jmp 3f
2:      PUTS64 "PROBE xsetbv try\n"
        movq %cr4, %rax
        orq $CR4_OSXSAVE, %rax
        movq %rax, %cr4
        xorl %ecx, %ecx                 # XCR0
        movl $3, %eax                   # x87 | SSE
        xorl %edx, %edx
        xsetbv
        PUTS64 "PROBE xsetbv ok\n"
        PUTS64 "PROBE xsave try\n"
        movl $xsave_area, %edi
        movl $3, %eax
        xorl %edx, %edx
        xsave (%rdi)
        PUTS64 "PROBE xsave ok\n"
        PUTS64 "PROBE xrstor try\n"
        movl $3, %eax
        xorl %edx, %edx
        xrstor (%rdi)
        PUTS64 "PROBE xrstor ok\n"

3:      # --- CMPXCHG16B ------------------------------------------------
        cmpl $0, skip_cx16
        je 4f
        PUTS64 "PROBE cmpxchg16b skipped (nocx16)\n"
        jmp 6f
4:      testl $CPUID1_ECX_CX16, cpuid1_ecx
        jnz 5f
        PUTS64 "PROBE cmpxchg16b skipped (CPUID.1:ECX.CX16=0)\n"
        jmp 6f
5:      PUTS64 "PROBE cmpxchg16b try\n"
        movl $cx16_area, %edi
        movq $1, %rax                   # expected old value RDX:RAX = 2:1
        movq $2, %rdx
        movq $3, %rbx                   # new value RCX:RBX = 4:3
        movq $4, %rcx
        lock cmpxchg16b (%rdi)
        jz 7f
        FAIL64 "cmpxchg16b did not see the expected old value"
7:      cmpq $3, (%rdi)
        jne 8f
        cmpq $4, 8(%rdi)
        je 9f
8:      FAIL64 "cmpxchg16b did not store the new value"
9:      PUTS64 "PROBE cmpxchg16b ok\n"

6:      # --- INT3 + IRETQ ----------------------------------------------
        cmpl $0, skip_int3
        je 10f
        PUTS64 "PROBE int3 skipped (noint3)\n"
        jmp 11f
10:     # IDT gate 3: 64-bit interrupt gate, DPL 0, selector SEL_CODE64.
        movl $int3_handler, %eax
        movl $idt + 3*16, %edi
        movw %ax, (%rdi)                # offset 15:0
        movw $SEL_CODE64, 2(%rdi)
        movw $0x8e00, 4(%rdi)           # IST 0, P=1, DPL=0, type 0xE
        shrl $16, %eax
        movw %ax, 6(%rdi)               # offset 31:16
        movl $0, 8(%rdi)                # offset 63:32
        movl $0, 12(%rdi)
        lidt idt_desc
        PUTS64 "PROBE int3 try\n"
        int3
        cmpl $1, int3_seen
        je 12f
        FAIL64 "returned from int3 without running the handler"
12:     PUTS64 "PROBE iretq ok\n"

11:     PUTS64 "PROBE all ok\n"
        PASS64

int3_handler:
        movl $1, int3_seen
        PUTS64 "PROBE int3 ok\n"
        PUTS64 "PROBE iretq try\n"
        iretq

        .code32

        .section .rodata
opt_noxsave:
        .asciz "noxsave"
opt_nocx16:
        .asciz "nocx16"
opt_noint3:
        .asciz "noint3"

        .data
skip_xsave:
        .long 0
skip_cx16:
        .long 0
skip_int3:
        .long 0
cpuid1_ecx:
        .long 0
int3_seen:
        .long 0

        .balign 16
cx16_area:
        .quad 1, 2

        .balign 8
        .word 0, 0, 0                   # align the base of idt_desc
idt_desc:
        .word 4*16 - 1                  # vectors 0-3 only
        .quad idt
        .balign 16
idt:
        .fill 4*16, 1, 0

        .balign 64
xsave_area:                             # legacy region + XSAVE header
        .fill 1024, 1, 0

        # Identity map of the first 1 GiB with 2 MiB pages (like the early
        # page tables of head_64.S), built at assembly time.
        .balign 4096
pml4:
        .quad pdpt + 0x3                # present | writable
        .fill 511, 8, 0
pdpt:
        .quad pd + 0x3
        .fill 511, 8, 0
pd:
        .set page, 0
        .rept 512
        .quad (page << 21) | 0x83       # present | writable | 2 MiB page
        .set page, page + 1
        .endr
