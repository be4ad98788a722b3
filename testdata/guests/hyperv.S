# hyperv.S: the Hyper-V enlightenments as Linux 6.1 detects and uses them,
# then a guest crash reported through the crash MSRs.
#
# Mirrors (see guest-protocols.md §2):
#  * ms_hyperv_platform (arch/x86/kernel/cpu/mshyperv.c): CPUID.1:ECX[31],
#    0x40000000 = "Microsoft Hv" with a max leaf in [0x40000005, 0x4000FFFF],
#    0x40000003.EAX with HYPERCALL (bit 5) and VP_INDEX (bit 6); and, as
#    kvm_cpuid_base() would find it otherwise, no "KVMKVMKVM" at any
#    0x400000xx00 leaf. Invariant TSC (0x80000007 EDX[8]) must be set.
#  * ms_hyperv_init_platform: the frequency MSRs (0x40000022/23).
#  * hv_init_tsc_clocksource (drivers/clocksource/hyperv_timer.c): rdmsr
#    REFERENCE_TSC, keep bits 11:0, set enable and the page's PFN, wrmsr, and
#    read the page at once; hv_read_tsc_page_tsc: ((tsc * scale) >> 64) +
#    offset, retried while the sequence changes.
#  * hyperv_init / hv_cpu_init (arch/x86/hyperv/hv_init.c): VP_INDEX, the VP
#    assist page (PFN << 12 | 1), GUEST_OS_ID = 0x8100 << 48 |
#    LINUX_VERSION_CODE << 16 (6.1.0), then the hypercall MSR read-then-write
#    with enable and the page's PFN; the VMM must have filled the page when
#    the WRMSR returns. kvmm's page is "mov eax, 2; ret": a call returns
#    HV_STATUS_INVALID_HYPERCALL_CODE.
#  * hv_common_init (drivers/hv/hv_common.c): CRASH_CTL is read to see what
#    the host offers; hyperv_report_panic / hv_kmsg_dump write P0-P4, then
#    CRASH_CTL = bit 63 (| bit 62 when P3/P4 describe a message page).
# It also reads TIME_REF_COUNT twice around a busy loop (it must advance)
# and between two TSC page readings (they must agree within 1 ms), and
# checks that bad writes raise #GP: a hypercall page beyond RAM, reserved
# bits, read-only MSRs, and a non-Hyper-V MSR KVM does not know.
#
# #GP is caught without IRET (this host's KVM cannot execute it): the
# handler drops the exception frame by reloading the ESP saved when the
# test armed it, and jumps to the test's continuation.
#
# The verdict is the crash itself: the VMM must end the VM with its
# guest-crashed status (kvmm: 126). If the guest is still running a while
# after CRASH_CTL, it FAILs. Command line "hyperv.kmsg": report the crash
# the kmsg-dump way (P3 = GPA of a message, P4 = its length, CRASH_CTL bits
# 63 and 62) instead of with register values.
#
# QEMU cannot run this guest on this workplace's hosts: QEMU's hv-* flags
# need KVM's in-kernel Hyper-V (KVM_CAP_HYPERV), which they lack, and QEMU
# keeps a KVM signature at 0x40000100 anyway. vmm/hyperv_test.go runs it
# under kvmm only.

        .include "lib.inc"
        GUEST hyperv

        .set MSR_GUEST_OS_ID, 0x40000000
        .set MSR_HYPERCALL, 0x40000001
        .set MSR_VP_INDEX, 0x40000002
        .set MSR_TIME_REF_COUNT, 0x40000020
        .set MSR_REFERENCE_TSC, 0x40000021
        .set MSR_TSC_FREQUENCY, 0x40000022
        .set MSR_APIC_FREQUENCY, 0x40000023
        .set MSR_VP_ASSIST_PAGE, 0x40000073
        .set MSR_SINT0, 0x40000090      # SynIC: not offered, so "unknown"
        .set MSR_CRASH_P0, 0x40000100
        .set MSR_CRASH_CTL, 0x40000105
        .set MSR_TSC_INVARIANT_CONTROL, 0x40000118
        .set MSR_NOT_AN_MSR, 0xc0de0000 # nothing: KVM has no such MSR

        .set HV_HYPERCALL, 1 << 5
        .set HV_VP_INDEX, 1 << 6
        .set HV_TIME, (1 << 1) | (1 << 9)
        .set HV_FREQ_EAX, 1 << 11
        .set HV_TSC_INVARIANT, 1 << 15
        .set HV_FREQ_EDX, 1 << 8
        .set HV_CRASH_EDX, 1 << 10
        .set CRASH_NOTIFY_HI, 0x80000000        # bit 63, high dword
        .set CRASH_NOTIFY_MSG_HI, 0x40000000    # bit 62, high dword

        .set GUEST_OS_ID_HI, 0x81000006 # 0x8100 << 48 | 0x060100 << 16
        .set GUEST_OS_ID_LO, 0x01000000
        .set HV_STATUS_INVALID_HYPERCALL_CODE, 2
        .set TOLERANCE, 10000           # 1 ms in 100 ns units
        .set BUSY_LOOPS, 100000
        .set CRASH_WAIT_LOOPS, 20000000 # a few seconds, emulated or not

        .set IDT_ENTRIES, 32            # exceptions only: interrupts stay off
        .set IDT_GATE_INTR32, 0x8e00
        .set STUB_SIZE, 8
        .set VECTOR_GP, 13

# EXPECT_GP insn, what: run insn (an RDMSR or WRMSR set up by the caller),
# which must raise #GP; print "hyperv: #GP on <what>" when it does.
.macro EXPECT_GP insn, what
        movl %esp, gp_esp
        movl $.Lgp_ok\@, gp_resume
        \insn
        movl $0, gp_resume
        FAIL "\what did not raise #GP"
.Lgp_ok\@:
        PUTS "hyperv: #GP on \what"
        call newline
.endm

        .text
        .code32
guest_main:
        call idt_setup
        call check_cpuid
        call check_guest_os_id
        call check_hypercall
        call check_vp_index
        call check_frequencies
        call check_tsc_page
        call check_time_ref_count
        call check_misc_msrs
        call check_gp
        jmp report_crash

# check_cpuid: detection as ms_hyperv_platform does it, and what must not be
# there.
check_cpuid:
        pushal
        movl $1, %eax
        cpuid
        testl $(1 << 31), %ecx
        jnz 1f
        FAIL "CPUID.1:ECX[31] (hypervisor present) is clear"
1:      movl $0x40000000, %eax
        cpuid
        cmpl $0x7263694d, %ebx          # "Micr"
        jne 2f
        cmpl $0x666f736f, %ecx          # "osof"
        jne 2f
        cmpl $0x76482074, %edx          # "t Hv"
        je 3f
2:      FAIL "CPUID 0x40000000 is not Microsoft Hv"
3:      cmpl $0x40000005, %eax
        jae 4f
        FAIL "CPUID 0x40000000 max leaf below 0x40000005"
4:      cmpl $0x4000ffff, %eax
        jbe 5f
        FAIL "CPUID 0x40000000 max leaf above 0x4000ffff"
5:      PUTS "hyperv: CPUID 0x40000000 \"Microsoft Hv\", max leaf "
        call print_hex32
        call newline
        movl $0x40000001, %eax
        cpuid
        cmpl $0x31237648, %eax          # "Hv#1"
        je 6f
        FAIL "CPUID 0x40000001 is not Hv#1"
6:      movl $0x40000003, %eax
        cpuid
        movl %eax, features_eax
        movl %edx, features_edx
        PUTS "hyperv: features eax="
        call print_hex32
        PUTS " ebx="
        movl %ebx, %eax
        call print_hex32
        PUTS " edx="
        movl %edx, %eax
        call print_hex32
        call newline
        movl features_eax, %eax
        andl $(HV_HYPERCALL | HV_VP_INDEX), %eax
        cmpl $(HV_HYPERCALL | HV_VP_INDEX), %eax
        je 7f
        FAIL "HYPERCALL MSR not available (CPUID 0x40000003 EAX bits 5, 6)"
7:      movl features_eax, %eax
        andl $HV_TIME, %eax
        cmpl $HV_TIME, %eax
        je 8f
        FAIL "no TIME_REF_COUNT / REFERENCE_TSC (this guest needs --hyperv time)"
8:      testl $HV_FREQ_EAX, features_eax
        jz 9f
        testl $HV_FREQ_EDX, features_edx
        jnz 10f
9:      FAIL "no frequency MSRs (this guest needs --hyperv frequencies)"
10:     testl $HV_CRASH_EDX, features_edx
        jnz 11f
        FAIL "no crash MSRs (this guest needs --hyperv crash)"
11:     # kvm_cpuid_base(): "KVMKVMKVM" at any 0x40000000 + n * 0x100 would
        # make Linux pick KVM over Hyper-V.
        movl $0x40000000, %esi
12:     movl %esi, %eax
        cpuid
        cmpl $0x4b4d564b, %ebx          # "KVMK"
        jne 13f
        cmpl $0x564b4d56, %ecx          # "VMKV"
        jne 13f
        PUTS "hyperv: KVM signature at "
        movl %esi, %eax
        call print_hex32
        call newline
        FAIL "a KVM signature is visible next to Hyper-V"
13:     addl $0x100, %esi
        cmpl $0x40010000, %esi
        jb 12b
        PUTS "hyperv: no KVM signature in 0x40000000-0x4000ff00\n"
        movl $0x80000000, %eax
        cpuid
        cmpl $0x80000007, %eax
        jb 14f
        movl $0x80000007, %eax
        cpuid
        testl $(1 << 8), %edx
        jnz 15f
14:     FAIL "no invariant TSC (CPUID 0x80000007 EDX[8])"
15:     PUTS "hyperv: invariant TSC\n"
        popal
        ret

# check_guest_os_id: what hyperv_init writes for Linux 6.1.0.
check_guest_os_id:
        pushal
        movl $MSR_GUEST_OS_ID, %ecx
        movl $GUEST_OS_ID_LO, %eax
        movl $GUEST_OS_ID_HI, %edx
        wrmsr
        xorl %eax, %eax
        xorl %edx, %edx
        rdmsr
        cmpl $GUEST_OS_ID_LO, %eax
        jne 1f
        cmpl $GUEST_OS_ID_HI, %edx
        je 2f
1:      FAIL "GUEST_OS_ID does not read back"
2:      PUTS "hyperv: GUEST_OS_ID "
        call print_hex64
        call newline
        popal
        ret

# check_hypercall: read-then-write with enable and the page's PFN; the page
# must hold the stub when the WRMSR returns, and calling it must fail
# cleanly.
check_hypercall:
        pushal
        movl $MSR_HYPERCALL, %ecx
        rdmsr
        testl $1, %eax
        jz 1f
        FAIL "hypercall page enabled before the guest enabled it"
1:      andl $0xfff, %eax               # keep bits 11:0, as hyperv_init does
        orl $(hypercall_page + 1), %eax # PFN << 12 | enable
        xorl %edx, %edx
        wrmsr
        movl %eax, %ebx
        rdmsr
        cmpl %ebx, %eax
        jne 2f
        testl %edx, %edx
        jz 3f
2:      FAIL "HYPERCALL does not read back"
3:      cmpl $0x000002b8, hypercall_page        # b8 02 00 00: mov $2, %eax
        jne 4f
        cmpw $0xc300, hypercall_page + 4        # 00 c3: ... ret
        je 5f
4:      FAIL "hypercall page does not hold mov eax, 2; ret"
5:      movl $0x12345678, %eax
        xorl %ecx, %ecx                 # control word: call code 0
        call hypercall_page
        cmpl $HV_STATUS_INVALID_HYPERCALL_CODE, %eax
        je 6f
        FAIL "a hypercall did not return HV_STATUS_INVALID_HYPERCALL_CODE"
6:      PUTS "hyperv: hypercall page at "
        movl $hypercall_page, %eax
        call print_hex32
        PUTS ", a call returns status 2\n"
        popal
        ret

check_vp_index:
        pushal
        movl $MSR_VP_INDEX, %ecx
        rdmsr
        orl %edx, %eax
        jz 1f
        FAIL "VP_INDEX of the boot vCPU is not 0"
1:      PUTS "hyperv: VP_INDEX 0\n"
        popal
        ret

# check_frequencies: TSC_FREQUENCY in Hz (kept for the scale check) and the
# APIC timer input, 1 GHz as KVM's emulated local APIC.
check_frequencies:
        pushal
        movl $MSR_TSC_FREQUENCY, %ecx
        rdmsr
        movl %eax, tsc_hz
        movl %edx, tsc_hz + 4
        testl %edx, %edx
        jnz 1f
        cmpl $10000000, %eax
        ja 1f
        FAIL "TSC_FREQUENCY is not above 10 MHz"
1:      PUTS "hyperv: TSC_FREQUENCY "
        call print_hex64
        movl $MSR_APIC_FREQUENCY, %ecx
        rdmsr
        testl %edx, %edx
        jnz 2f
        cmpl $1000000000, %eax
        je 3f
2:      FAIL "APIC_FREQUENCY is not 1 GHz"
3:      PUTS " Hz, APIC_FREQUENCY "
        call print_dec
        PUTS " Hz\n"
        popal
        ret

# check_tsc_page: enable the page as hv_init_tsc_clocksource does; it must
# be valid when the WRMSR returns, and its scale must be 2^64 * 10^7 /
# TSC_FREQUENCY.
check_tsc_page:
        pushal
        movl $MSR_REFERENCE_TSC, %ecx
        rdmsr
        andl $0xfff, %eax
        orl $(tsc_page + 1), %eax
        xorl %edx, %edx
        wrmsr
        movl tsc_page, %eax             # tsc_sequence
        testl %eax, %eax
        jnz 1f
        FAIL "TSC page sequence is 0 right after enabling it"
1:      PUTS "hyperv: TSC page sequence "
        call print_dec
        PUTS " scale "
        movl tsc_page + 8, %eax
        movl tsc_page + 12, %edx
        call print_hex64
        PUTS " offset "
        movl tsc_page + 16, %eax
        movl tsc_page + 20, %edx
        call print_hex64
        call newline
        # (scale * f) >> 64 = 10^7 - 1 (scale is a floor) or exactly 10^7.
        movl $tsc_page + 8, %esi
        movl $tsc_hz, %edi
        call mul64_hi
        testl %edx, %edx
        jnz 2f
        cmpl $9999999, %eax
        je 3f
        cmpl $10000000, %eax
        je 3f
2:      FAIL "TSC page scale is not 2^64 * 10^7 / TSC_FREQUENCY"
3:      PUTS "hyperv: TSC page scale matches TSC_FREQUENCY\n"
        popal
        ret

# check_time_ref_count: TIME_REF_COUNT between two TSC page readings (within
# TOLERANCE), then twice around a busy loop (it must advance).
check_time_ref_count:
        pushal
        call page_time
        movl %eax, t1
        movl %edx, t1 + 4
        movl $MSR_TIME_REF_COUNT, %ecx
        rdmsr
        movl %eax, t2
        movl %edx, t2 + 4
        call page_time
        movl %eax, t3
        movl %edx, t3 + 4
        PUTS "hyperv: reference time: TSC page "
        movl t1, %eax
        movl t1 + 4, %edx
        call print_hex64
        PUTS ", TIME_REF_COUNT "
        movl t2, %eax
        movl t2 + 4, %edx
        call print_hex64
        PUTS ", TSC page "
        movl t3, %eax
        movl t3 + 4, %edx
        call print_hex64
        call newline
        cmpl $0, t2 + 4
        je 1f
        FAIL "TIME_REF_COUNT is over 7 minutes right after boot"
1:      movl t2, %eax                   # t2 + TOLERANCE - t1 >= 0
        movl t2 + 4, %edx
        addl $TOLERANCE, %eax
        adcl $0, %edx
        subl t1, %eax
        sbbl t1 + 4, %edx
        jns 2f
        FAIL "TIME_REF_COUNT is behind the TSC page"
2:      movl t3, %eax                   # t3 + TOLERANCE - t2 >= 0
        movl t3 + 4, %edx
        addl $TOLERANCE, %eax
        adcl $0, %edx
        subl t2, %eax
        sbbl t2 + 4, %edx
        jns 3f
        FAIL "TIME_REF_COUNT is ahead of the TSC page"
3:      PUTS "hyperv: TSC page and TIME_REF_COUNT agree within 1 ms\n"
        movl $MSR_TIME_REF_COUNT, %ecx
        rdmsr
        movl %eax, t1
        movl %edx, t1 + 4
        movl $BUSY_LOOPS, %ebx
4:      decl %ebx
        jnz 4b
        rdmsr
        subl t1, %eax
        sbbl t1 + 4, %edx
        jnz 5f                          # negative, or absurdly large
        testl %eax, %eax
        jnz 6f
5:      FAIL "TIME_REF_COUNT did not advance over a busy loop"
6:      PUTS "hyperv: TIME_REF_COUNT advanced by "
        call print_dec
        PUTS " over a busy loop\n"
        popal
        ret

# check_misc_msrs: the VP assist page is accepted, TSC_INVARIANT_CONTROL is
# accepted (and reads back only when offered), and a synthetic MSR that is
# not offered reads 0 and ignores writes.
check_misc_msrs:
        pushal
        movl $MSR_VP_ASSIST_PAGE, %ecx
        movl $(vp_assist_page + 1), %eax
        xorl %edx, %edx
        wrmsr
        rdmsr
        cmpl $(vp_assist_page + 1), %eax
        jne 1f
        testl %edx, %edx
        jz 2f
1:      FAIL "VP_ASSIST_PAGE does not read back"
2:      movl $MSR_TSC_INVARIANT_CONTROL, %ecx
        movl $1, %eax
        xorl %edx, %edx
        wrmsr
        rdmsr
        xorl %ebx, %ebx                 # expected: 1 when offered, else 0
        testl $HV_TSC_INVARIANT, features_eax
        jz 3f
        incl %ebx
3:      cmpl %ebx, %eax
        jne 4f
        testl %edx, %edx
        jz 5f
4:      FAIL "TSC_INVARIANT_CONTROL reads back wrong"
5:      movl $MSR_SINT0, %ecx
        movl $0x12345, %eax
        xorl %edx, %edx
        wrmsr
        rdmsr
        orl %edx, %eax
        jz 6f
        FAIL "a synthetic MSR that is not offered does not read 0"
6:      PUTS "hyperv: VP assist page, TSC invariant control and unknown synthetic MSRs accepted\n"
        popal
        ret

# check_gp: writes the VMM must refuse with #GP, and a non-Hyper-V MSR KVM
# does not know, which must fault as without the personality.
check_gp:
        pushal
        movl $MSR_HYPERCALL, %ecx
        movl $1, %eax                   # enable, GPA 64 GiB: beyond RAM
        movl $0x10, %edx
        EXPECT_GP wrmsr, "HYPERCALL beyond RAM"
        rdmsr
        cmpl $(hypercall_page + 1), %eax
        je 1f
        FAIL "a refused HYPERCALL write changed the MSR"
1:      movl $MSR_HYPERCALL, %ecx
        movl $(hypercall_page + 1 + 0x100), %eax        # reserved bit 8
        xorl %edx, %edx
        EXPECT_GP wrmsr, "HYPERCALL reserved bits"
        movl $MSR_REFERENCE_TSC, %ecx
        movl $(tsc_page + 3), %eax      # reserved bit 1
        xorl %edx, %edx
        EXPECT_GP wrmsr, "REFERENCE_TSC reserved bits"
        movl $MSR_VP_INDEX, %ecx
        movl $1, %eax
        xorl %edx, %edx
        EXPECT_GP wrmsr, "VP_INDEX write (read-only)"
        movl $MSR_TIME_REF_COUNT, %ecx
        xorl %eax, %eax
        xorl %edx, %edx
        EXPECT_GP wrmsr, "TIME_REF_COUNT write (read-only)"
        movl $MSR_CRASH_CTL, %ecx
        movl $1, %eax                   # reserved bit 0
        xorl %edx, %edx
        EXPECT_GP wrmsr, "CRASH_CTL reserved bits"
        movl $MSR_NOT_AN_MSR, %ecx
        EXPECT_GP rdmsr, "an MSR KVM does not know"
        popal
        ret

# report_crash: what Linux's panic path does with the crash MSRs. Never
# returns: the VMM must stop the VM.
report_crash:
        movl $MSR_CRASH_CTL, %ecx
        rdmsr
        PUTS "hyperv: CRASH_CTL offers "
        call print_hex64
        call newline
        testl $CRASH_NOTIFY_HI, %edx
        jnz 1f
        FAIL "CRASH_CTL does not offer CRASH_NOTIFY"
1:      movl %edx, crash_ctl_offer
        movl $opt_kmsg, %esi
        call cmdline_has
        testl %eax, %eax
        jnz 3f
        # hyperv_report_panic: P0 = error, P1 = GUEST_OS_ID, P2 = RIP,
        # P3 = RAX, P4 = RSP.
        movl $MSR_GUEST_OS_ID, %ecx
        rdmsr
        movl %eax, crash_p + 8
        movl %edx, crash_p + 12
        movl $0x1, crash_p              # P0
        movl $report_crash, crash_p + 16        # P2
        movl $0xa5a5a5a5, crash_p + 24  # P3
        movl %esp, crash_p + 32         # P4
        movl $CRASH_NOTIFY_HI, crash_ctl
        PUTS "hyperv: reporting a crash through the crash MSRs\n"
        jmp 4f
3:      # hv_kmsg_dump: P0-P2 = 0, P3 = GPA of the text, P4 = its length.
        testl $CRASH_NOTIFY_MSG_HI, crash_ctl_offer
        jnz 5f
        FAIL "CRASH_CTL does not offer CRASH_NOTIFY_MSG"
5:      movl $crash_msg, crash_p + 24
        movl $(crash_msg_end - crash_msg), crash_p + 32
        movl $(CRASH_NOTIFY_HI | CRASH_NOTIFY_MSG_HI), crash_ctl
        PUTS "hyperv: reporting a crash with a message through the crash MSRs\n"
4:      movl $MSR_CRASH_P0, %ecx
        movl $crash_p, %esi
6:      movl (%esi), %eax
        movl 4(%esi), %edx
        wrmsr
        addl $8, %esi
        incl %ecx
        cmpl $MSR_CRASH_CTL, %ecx
        jb 6b
        xorl %eax, %eax
        movl crash_ctl, %edx
        wrmsr                           # CRASH_CTL: the VM should end here
        movl $CRASH_WAIT_LOOPS, %ecx
7:      decl %ecx
        jnz 7b
        FAIL "still running after CRASH_CTL"

# page_time: EDX:EAX = the reference time read from the TSC page, the way
# hv_read_tsc_page_tsc does: ((rdtsc * scale) >> 64) + offset, again if the
# sequence changed meanwhile. FAILs when the page is invalid.
page_time:
        pushl %ebx
        pushl %esi
        pushl %edi
1:      movl tsc_page, %ebx
        testl %ebx, %ebx
        jnz 2f
        FAIL "TSC page became invalid (sequence 0)"
2:      rdtsc
        movl %eax, tsc_now
        movl %edx, tsc_now + 4
        movl $tsc_now, %esi
        movl $tsc_page + 8, %edi
        call mul64_hi
        addl tsc_page + 16, %eax
        adcl tsc_page + 20, %edx
        cmpl tsc_page, %ebx
        jne 1b
        popl %edi
        popl %esi
        popl %ebx
        ret

# mul64_hi: ESI -> a, EDI -> b (u64 each). EDX:EAX = (a * b) >> 64, from the
# four 32x32 products: with a = a1:a0 and b = b1:b0,
#   a*b = a0b0 + (a0b1 + a1b0) << 32 + a1b1 << 64,
# so the high half is a1b1 + hi(a0b1) + hi(a1b0) + the carries out of
# hi(a0b0) + lo(a0b1) + lo(a1b0).
mul64_hi:
        pushl %ebx
        pushl %ecx
        pushl %ebp
        movl (%esi), %eax
        mull (%edi)                     # a0 * b0
        movl %edx, %ecx                 # ECX = middle word: hi(a0b0)
        xorl %ebx, %ebx                 # EBX = carries out of the middle word
        movl (%esi), %eax
        mull 4(%edi)                    # a0 * b1
        addl %eax, %ecx
        adcl $0, %ebx
        movl %edx, %ebp                 # EBP = result low: hi(a0b1)
        pushl $0                        # (%esp) = result high
        movl 4(%esi), %eax
        mull (%edi)                     # a1 * b0
        addl %eax, %ecx
        adcl $0, %ebx
        addl %edx, %ebp
        adcl $0, (%esp)
        movl 4(%esi), %eax
        mull 4(%edi)                    # a1 * b1
        addl %eax, %ebp
        adcl %edx, (%esp)
        addl %ebx, %ebp
        adcl $0, (%esp)
        movl %ebp, %eax
        popl %edx
        popl %ebp
        popl %ecx
        popl %ebx
        ret

# idt_setup: 32 exception gates; #GP goes to gp_handler, the rest to stubs
# that FAIL with the vector number.
idt_setup:
        pushal
        movl $idt, %edi
        movl $exc_stubs, %esi
        xorl %ecx, %ecx
1:      movl %esi, %eax
        cmpl $VECTOR_GP, %ecx
        jne 2f
        movl $gp_handler, %eax
2:      movl %eax, %edx
        andl $0xffff, %eax              # offset 15:0
        orl $(SEL_CODE32 << 16), %eax   # selector
        movl %eax, (%edi)
        andl $0xffff0000, %edx          # offset 31:16
        orl $IDT_GATE_INTR32, %edx
        movl %edx, 4(%edi)
        addl $8, %edi
        addl $STUB_SIZE, %esi
        incl %ecx
        cmpl $IDT_ENTRIES, %ecx
        jb 1b
        lidt idt_desc
        popal
        ret

# gp_handler: entered through an interrupt gate with an error code on the
# stack. An expected #GP continues at gp_resume on the stack saved in
# gp_esp (the exception frame is dropped: no IRET here); any other FAILs.
gp_handler:
        cmpl $0, gp_resume
        je 1f
        movl gp_esp, %esp
        pushl gp_resume
        movl $0, gp_resume
        ret
1:      movl $stack_top, %esp
        FAIL "unexpected #GP"

# unexpected_exception: reached by "call" from a stub; the return address
# gives the vector.
unexpected_exception:
        popl %eax
        movl $stack_top, %esp
        subl $(exc_stubs + 5), %eax     # "call rel32" is 5 bytes
        shrl $3, %eax                   # / STUB_SIZE
        PUTS "hyperv: unexpected exception, vector "
        call print_dec
        call newline
        FAIL "unexpected exception"

        .balign STUB_SIZE
exc_stubs:
        .rept IDT_ENTRIES
        call unexpected_exception
        .balign STUB_SIZE
        .endr

        .section .rodata
opt_kmsg:
        .asciz "hyperv.kmsg"
crash_msg:
        .ascii "Kernel panic - not syncing: hyperv test guest\n"
        .ascii "CPU: 0 PID: 1 Comm: init\n"
crash_msg_end:

        .data
        .balign 4
        .word 0                         # pad so the base is 4-aligned
idt_desc:
        .word IDT_ENTRIES * 8 - 1
        .long idt
        .balign 8
features_eax:
        .long 0
features_edx:
        .long 0
gp_esp:
        .long 0
gp_resume:
        .long 0
crash_ctl_offer:
        .long 0
crash_ctl:
        .long 0                         # high dword of the CRASH_CTL value
        .balign 8
tsc_hz:
        .quad 0
tsc_now:
        .quad 0
t1:
        .quad 0
t2:
        .quad 0
t3:
        .quad 0
crash_p:
        .quad 0, 0, 0, 0, 0             # P0-P4

        .bss
        .balign 8
idt:
        .skip IDT_ENTRIES * 8
        .balign 4096
hypercall_page:
        .skip 4096
tsc_page:
        .skip 4096
vp_assist_page:
        .skip 4096
