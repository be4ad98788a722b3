# exitloop.S: the exit round-trip benchmark (bench/, `make bench`).
#
# Does N guest writes that each exit to the VMM and are handled there:
#
#     exitloop: pio n=<N>          (the line ends just before the first write)
#     exitloop: done               (printed right after the last one)
#     PASS exitloop
#
# The host timestamps the end of the first line and the start of the second
# as they arrive on the VMM's standard output and divides the interval by N:
# the cost of one exit, its handling and the re-entry, plus the guest's own
# write instruction (emulated on hosts without hardware virtualization, the
# same under every VMM). Start-up, boot and shutdown are not in the figure.
# (The guest's TSC is no clock here: RDTSC deltas in kernel mode under this
# workplace's KVM are off by up to tenfold.)
#
# Command line (hvm_start_info.cmdline):
#   exitloop.mode=pio    N 1-byte OUTs to port 0x80 (the POST port: a VMM
#                        device in kvmm, an I/O write QEMU answers in user
#                        space; the floor ignores it; with an ioeventfd bound
#                        to the port KVM completes it in the kernel)
#   exitloop.mode=mmio   N 4-byte writes to 0xD0000000: in the 32-bit MMIO
#                        hole, no RAM and no device there, so every write is
#                        a KVM_EXIT_MMIO the VMM answers as unmapped
#   exitloop.n=<N>       the count, a multiple of 100 (default 20000)
# No mode (or an unknown one) FAILs, so a mistyped benchmark cannot pass.
#
# The writes are unrolled 100 to a loop iteration: on a host whose KVM
# emulates kernel-mode code (~1 us an instruction) the loop's DEC/JNZ would
# otherwise add two instructions to every exit.

        .include "lib.inc"
        GUEST exitloop

        .set POST_PORT, 0x80
        .set MMIO_UNMAPPED, 0xd0000000  # layout.PCIMMIO32Start + 256 MiB
        .set UNROLL, 100
        .set DEFAULT_N, 20000

        .text
        .code32
guest_main:
        movl $opt_n, %esi
        call cmdline_find               # EAX = digits after "exitloop.n=", or 0
        movl $DEFAULT_N, %ecx
        testl %eax, %eax
        jz 1f
        call parse_dec                  # EAX = value, CF = no digits
        jc 8f
        movl %eax, %ecx
1:      movl %ecx, %eax                 # N must be a positive multiple of UNROLL
        xorl %edx, %edx
        movl $UNROLL, %ebx
        divl %ebx
        testl %edx, %edx
        jnz 8f
        testl %eax, %eax
        jz 8f
        movl %eax, %ebp                 # EBP = loop iterations

        movl $opt_pio, %esi
        call cmdline_has
        testl %eax, %eax
        jnz pio
        movl $opt_mmio, %esi
        call cmdline_has
        testl %eax, %eax
        jnz mmio
        FAIL "no exitloop.mode=pio|mmio on the command line"
8:      FAIL "exitloop.n must be a positive multiple of 100"

pio:
        PUTS "exitloop: pio n="
        call print_n
        xorl %eax, %eax
2:      .rept UNROLL
        outb %al, $POST_PORT
        .endr
        decl %ebp
        jnz 2b
        jmp 9f

mmio:
        PUTS "exitloop: mmio n="
        call print_n
        movl $MMIO_UNMAPPED, %edi
        xorl %eax, %eax
3:      .rept UNROLL
        movl %eax, (%edi)
        .endr
        decl %ebp
        jnz 3b

9:      PUTS "exitloop: done\n"
        PASS

# print_n: print EBP * UNROLL and a newline.
print_n:
        pushl %eax
        pushl %edx
        movl %ebp, %eax
        movl $UNROLL, %edx
        mull %edx
        call print_dec
        call newline
        popl %edx
        popl %eax
        ret

# cmdline_find: ESI = NUL-terminated needle. EAX = the address just past its
# first occurrence in the command line (below 4 GiB), or 0.
cmdline_find:
        pushal
        xorl %eax, %eax
        call start_info_valid
        jne 9f
        movl start_info, %ebx
        cmpl $0, SI_CMDLINE+4(%ebx)
        jne 9f
        movl SI_CMDLINE(%ebx), %edi
        testl %edi, %edi
        jz 9f
        movl $4096, %ebp                # bound: the longest command line scanned
1:      xorl %ecx, %ecx                 # try a match at EDI
2:      movb (%esi,%ecx), %dl
        testb %dl, %dl
        jz 8f                           # end of needle: match
        cmpb (%edi,%ecx), %dl
        jne 3f
        incl %ecx
        jmp 2b
3:      cmpb $0, (%edi)
        je 9f                           # end of command line
        incl %edi
        decl %ebp
        jnz 1b
        jmp 9f
8:      leal (%edi,%ecx), %eax
9:      movl %eax, 28(%esp)             # EAX slot of pushal
        popal
        ret

# parse_dec: EAX = address of decimal digits. EAX = their value (at most 9
# digits are read), CF=1 when there is no digit.
parse_dec:
        pushl %ecx
        pushl %edx
        pushl %esi
        movl %eax, %esi
        xorl %eax, %eax
        xorl %ecx, %ecx                 # digits seen
1:      movzbl (%esi,%ecx), %edx
        subl $'0', %edx
        cmpl $9, %edx
        ja 2f                           # not a digit (unsigned compare)
        imull $10, %eax
        addl %edx, %eax
        incl %ecx
        cmpl $9, %ecx
        jb 1b
2:      cmpl $1, %ecx                   # CF = (ECX < 1)
        popl %esi
        popl %edx
        popl %ecx
        ret

        .section .rodata
opt_n:
        .asciz "exitloop.n="
opt_pio:
        .asciz "exitloop.mode=pio"
opt_mmio:
        .asciz "exitloop.mode=mmio"
