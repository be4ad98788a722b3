# vmwballoon.S: the VMware balloon as Linux 6.1's vmw_balloon drives it, on
# a VMM with the VMware personality (kvmm --personality vmware).
#
# Mirrors, in order (guest-protocols.md §1; the driver's source is the
# reference: QEMU has no VMware balloon, only the backdoor, so there is no
# QEMU oracle for this guest; vmm/balloon_test.go runs it under kvmm):
#  * vmware_platform (arch/x86/kernel/cpu/vmware.c): CPUID.1:ECX[31], then
#    0x40000000 = "VMwareVMware" with a max leaf >= 0x40000010, then
#    0x40000010 ECX bits 0-1 = 0 (I/O-port backdoor, not VMCALL/VMMCALL).
#    And what must not be there: "KVMKVMKVM" at any 0x400000xx00 leaf
#    (kvm_cpuid_base would win over VMware). Invariant TSC (0x80000007
#    EDX[8]).
#  * The backdoor (port 0x5658, `inl (%dx)`, EAX = 0x564D5868): GETVERSION
#    (10; the DMI path's check), GETHZ (45; vmware_platform_setup: EAX/EBX
#    = TSC Hz, which must match CPUID 0x40000010, ECX = APIC bus Hz), the
#    STEALCLOCK probe (91; ESI=0, EDI=1: must say "not available"),
#    GETVCPU_INFO (68; bit 31 clear, bit 3 = x2APIC offered by CPUID); an
#    unknown command and a wrong magic read all ones, as on QEMU's vmport.
#  * vmballoon_reset (drivers/misc/vmw_balloon.c), on port 0x5670 with
#    EAX = 0x456c6d6f, RCX = command, RBX/RSI = arguments:
#    VMCI_DOORBELL_SET(~0, ~0) (status 0 or 1, never 7), START(0x3e) (must
#    answer SUCCESS_WITH_CAPABILITIES with BASIC|BATCHED|BATCHED_2M and no
#    SIGNALLED_WAKEUP), GUEST_ID(1).
#  * vmballoon_work: GET_TARGET(totalram frames) until the host sets a
#    target (it must be 1024 frames, 4 MiB); then vmballoon_inflate with
#    max_page_size = 2M: a BATCHED_2M_LOCK of one 2 MiB page, then, as
#    after a failed 2M allocation, BATCHED_LOCK of 512 4 KiB pages; every
#    entry status 0 and RBX = the target in every reply. All 4 MiB were
#    written before (one word a page) so that the host has memory to free.
#  * Refusals VMware gives, one-entry batches (as balloon compaction
#    sends): locking a locked page -> 3 (PPN_LOCKED), a 4K page inside the
#    locked 2M page -> 3, a 2M page over locked 4K pages -> 3, a page
#    beyond RAM -> 2 (PPN_INVALID), a misaligned 2M page -> 2, unlocking a
#    page never locked -> 4 (PPN_UNLOCKED).
#  * Prints "vmwballoon: locked 1024" and polls GET_TARGET until the host,
#    having measured its memory, sets the target to 0.
#  * vmballoon_deflate: BATCHED_UNLOCK of the 512 4K pages, then
#    BATCHED_2M_UNLOCK of the 2M page; the pages read as zero (the host
#    dropped their memory) and are usable again.
#  * The reset protocol: locks one more page, prints "vmwballoon:
#    deflated", polls GET_TARGET until the host answers ERROR_RESET (7),
#    then resets as vmballoon_reset does (doorbell cleanup, "pop" without
#    UNLOCK, START, GUEST_ID). The popped page must lock again with status
#    0: START made the host forget it. Then PASS.
#
# Every wait is bounded: ~30 s by the ACPI PM timer (its port from the
# FADT), or a poll count without one. Long mode as Linux runs (the driver
# passes 64-bit registers): identity page tables, 2 MiB pages, first 1 GiB.

        .include "lib.inc"
        .include "acpi_pm.inc"
        GUEST vmwballoon

        # Backdoor (arch/x86/include/asm/vmware.h).
        .set VMWARE_MAGIC, 0x564D5868
        .set VMWARE_PORT, 0x5658
        .set CMD_GETVERSION, 10
        .set CMD_GETHZ, 45
        .set CMD_GETVCPU_INFO, 68
        .set CMD_STEALCLOCK, 91

        # Balloon (drivers/misc/vmw_balloon.c).
        .set BALLOON_MAGIC, 0x456c6d6f
        .set BALLOON_PORT, 0x5670
        .set B_START, 0
        .set B_GET_TARGET, 1
        .set B_GUEST_ID, 4
        .set B_BATCHED_LOCK, 6
        .set B_BATCHED_UNLOCK, 7
        .set B_BATCHED_2M_LOCK, 8
        .set B_BATCHED_2M_UNLOCK, 9
        .set B_DOORBELL_SET, 10
        .set CAPS_REQUESTED, 0x3e       # VMW_BALLOON_CAPABILITIES, 64-bit
        .set CAP_BASIC, 1 << 1
        .set CAP_BATCHED, 1 << 2
        .set CAP_BATCHED_2M, 1 << 3
        .set CAP_SIGNALLED_WAKEUP, 1 << 4
        .set SUCCESS_WITH_CAPS, 0x03000000
        .set ST_RESET, 7
        .set VMCI_INVALID_ID, 0xffffffff

        # Guest pages (RAM in a 128 MiB guest, well above this image).
        .set BATCH, 0x00800000          # the batch page
        .set HUGE, 0x01000000           # the 2 MiB page (16 MiB)
        .set SMALL, 0x01200000          # 512 4 KiB pages (18-20 MiB)
        .set POPPED, 0x01400000         # the page popped by the reset
        .set NEVER, 0x01401000          # a page never locked
        .set TARGET_FRAMES, 1024        # 4 MiB: the 2M page + 512 4K pages
        .set MARK, 0x6d6c6f6e           # written into every page first

        .set PM_TMR_HZ, 3579545
        .set WAIT_TICKS, 30 * PM_TMR_HZ # ~30 s
        .set WAIT_POLLS, 5000000        # cap, and the bound without a PM timer
        .set WAIT_NONZERO, 0
        .set WAIT_ZERO, 1
        .set WAIT_RESET, 2

        .set CR0_PG, 1 << 31
        .set CR4_PAE, 1 << 5
        .set MSR_EFER, 0xc0000080
        .set EFER_LME, 1 << 8

        .text
        .code32
guest_main:
        PUTS "vmwballoon: start\n"
        call start_info_check
        call memmap_locate              # ESI = map, ECX = entries
        jecxz 1f
        call memmap_total_ram           # EDX:EAX bytes
        shrdl $12, %edx, %eax           # -> frames (totalram_pages)
        movl %eax, ram_frames
        call memmap_ram_top
        jmp 2f
1:      FAIL "no memory map"
2:      movl $0x50434146, %eax          # "FACP"
        call acpi_find_table
        testl %eax, %eax
        jz 3f
        movl %eax, %ebx
        movl $208, %ecx                 # X_PM_TMR_BLK, else PM_TMR_BLK (76)
        movl $76, %edx
        call fadt_io_port
        movl %eax, pm_tmr               # acpi_pm.inc's (0: none)
3:      PUTS "vmwballoon: PM timer port "
        movl pm_tmr, %eax
        call print_hex32
        PUTS ", RAM "
        movl ram_frames, %eax
        call print_dec
        PUTS " frames, top of RAM "
        movl ram_top, %eax
        movl ram_top + 4, %edx
        call print_hex64
        call newline

        # Long mode (head_64.S: startup_32).
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

# memmap_ram_top: ESI = memory map, ECX = entries. ram_top = the end of the
# highest E820_RAM entry: the first address past RAM.
memmap_ram_top:
        pushal
        xorl %ebx, %ebx                 # EDI:EBX = the top so far
        xorl %edi, %edi
1:      cmpl $E820_RAM, 16(%esi)
        jne 2f
        movl (%esi), %eax
        movl 4(%esi), %edx
        addl 8(%esi), %eax
        adcl 12(%esi), %edx             # EDX:EAX = the entry's end
        cmpl %edi, %edx
        jb 2f
        ja 3f
        cmpl %ebx, %eax
        jbe 2f
3:      movl %eax, %ebx
        movl %edx, %edi
2:      addl $MEMMAP_ENTRY_SIZE, %esi
        decl %ecx
        jnz 1b
        movl %ebx, ram_top
        movl %edi, ram_top + 4
        popal
        ret

        .code64
long_mode:
        movl $SEL_DATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        movl $stack_top, %esp

        call check_cpuid
        call check_backdoor
        call balloon_reset
        PUTS64 "vmwballoon: START(0x3e) granted 0x"
        movl caps, %eax
        call hex32_64
        PUTS64 ", GUEST_ID(1) sent\n"
        call touch
        PUTS64 "vmwballoon: touched 4 MiB, polling GET_TARGET\n"

        movl $WAIT_NONZERO, %r12d
        call wait_target
        movq %rbx, target
        PUTS64 "vmwballoon: GET_TARGET: "
        movq %rbx, %rax
        call dec64
        PUTS64 " frames\n"
        cmpq $TARGET_FRAMES, %rbx
        je 1f
        FAIL64 "this guest needs a target of 1024 frames (4 MiB)"
1:      call inflate
        call refusals
        PUTS64 "vmwballoon: locked 1024\n"

        movl $WAIT_ZERO, %r12d
        call wait_target
        movq %rbx, target
        PUTS64 "vmwballoon: GET_TARGET: 0 frames, deflating\n"
        call deflate

        # A page the reset will pop, then wait for the host's reset.
        movl $POPPED, %eax
        movl $B_BATCHED_LOCK, %ecx
        call one_entry
        testl %eax, %eax
        jz 2f
        FAIL64 "locking the page to be popped was refused"
2:      PUTS64 "vmwballoon: deflated; 1 page locked, waiting for the host to reset the balloon\n"
        movl $WAIT_RESET, %r12d
        call wait_target
        PUTS64 "vmwballoon: GET_TARGET answered ERROR_RESET (7): vmballoon_reset pops the balloon and restarts\n"
        call balloon_reset
        movl $POPPED, %eax              # the popped page: forgotten by START
        movl $B_BATCHED_LOCK, %ecx
        call one_entry
        testl %eax, %eax
        jz 3f
        PUTS64 "vmwballoon: relocking the popped page: status "
        call dec64
        call nl64
        FAIL64 "the host kept a popped page locked across START"
3:      movl $POPPED, %eax
        movl $B_BATCHED_UNLOCK, %ecx
        call one_entry
        testl %eax, %eax
        jz 4f
        FAIL64 "unlocking the relocked page was refused"
4:      PUTS64 "vmwballoon: after the reset the popped page locked again (status 0) and unlocked\n"
        PASS64

# ---------------------------------------------------------------------------
# Detection.
# ---------------------------------------------------------------------------

# check_cpuid: vmware_platform, and what must not be there.
check_cpuid:
        movl $1, %eax
        xorl %ecx, %ecx
        cpuid
        btl $31, %ecx
        jc 1f
        FAIL64 "CPUID.1:ECX[31] (hypervisor present) is clear"
1:      shrl $21, %ecx                  # x2APIC
        andl $1, %ecx
        movl %ecx, x2apic
        movl $0x40000000, %eax
        cpuid
        cmpl $0x61774d56, %ebx          # "VMwa"
        jne 2f
        cmpl $0x4d566572, %ecx          # "reVM"
        jne 2f
        cmpl $0x65726177, %edx          # "ware"
        je 3f
2:      FAIL64 "CPUID 0x40000000 is not VMwareVMware"
3:      cmpl $0x40000010, %eax
        jae 4f
        FAIL64 "CPUID 0x40000000 max leaf below 0x40000010"
4:      PUTS64 "vmwballoon: CPUID 0x40000000 \"VMwareVMware\", max leaf 0x"
        call hex32_64
        call nl64
        movl $0x40000010, %eax
        cpuid
        testl $3, %ecx
        jz 5f
        FAIL64 "CPUID 0x40000010 ECX selects VMCALL/VMMCALL: the backdoor must be the I/O port"
5:      movl %eax, tsc_khz
        movl %ebx, apic_khz
        PUTS64 "vmwballoon: CPUID 0x40000010: TSC "
        call dec64
        PUTS64 " kHz, APIC bus "
        movl %ebx, %eax
        call dec64
        PUTS64 " kHz, hypercall mode 0 (I/O port)\n"
        # kvm_cpuid_base(): "KVMKVMKVM" at 0x40000000 + n * 0x100.
        movl $0x40000000, %esi
6:      movl %esi, %eax
        cpuid
        cmpl $0x4b4d564b, %ebx          # "KVMK"
        jne 7f
        cmpl $0x564b4d56, %ecx          # "VMKV"
        jne 7f
        FAIL64 "a KVM signature is visible next to VMware"
7:      addl $0x100, %esi
        cmpl $0x40010000, %esi
        jb 6b
        PUTS64 "vmwballoon: no KVM signature in 0x40000000-0x4000ff00\n"
        movl $0x80000000, %eax
        cpuid
        cmpl $0x80000007, %eax
        jb 8f
        movl $0x80000007, %eax
        cpuid
        btl $8, %edx
        jc 9f
8:      FAIL64 "no invariant TSC (CPUID 0x80000007 EDX[8])"
9:      PUTS64 "vmwballoon: invariant TSC\n"
        ret

# backdoor: ECX = command, EBX, ESI, EDI = arguments; the VMWARE_PORT asm.
# Answers in EAX, EBX, ECX, EDX.
backdoor:
        movl $VMWARE_MAGIC, %eax
        movl $VMWARE_PORT, %edx
        inl (%dx), %eax
        ret

check_backdoor:
        movl $CMD_GETVERSION, %ecx
        movl $0xffffffff, %ebx
        call backdoor
        cmpl $0xffffffff, %eax
        je 1f
        cmpl $VMWARE_MAGIC, %ebx
        je 2f
1:      FAIL64 "backdoor GETVERSION: no VMware answer"
2:      PUTS64 "vmwballoon: backdoor GETVERSION: version "
        call dec64
        PUTS64 ", product type "
        movl %ecx, %eax
        call dec64
        call nl64

        movl $CMD_GETHZ, %ecx
        movl $0xffffffff, %ebx
        call backdoor
        cmpl $0xffffffff, %ebx
        jne 3f
        FAIL64 "backdoor GETHZ failed (EBX all ones): Linux would calibrate the TSC itself"
3:      shlq $32, %rbx
        movl %eax, %eax
        orq %rbx, %rax                  # TSC Hz
        movl %ecx, %r8d                 # APIC bus Hz
        PUTS64 "vmwballoon: backdoor GETHZ: TSC "
        call dec64
        PUTS64 " Hz, APIC bus "
        movq %rax, %r9
        movl %r8d, %eax
        call dec64
        PUTS64 " Hz\n"
        movl tsc_khz, %eax
        imulq $1000, %rax
        cmpq %rax, %r9
        je 4f
        FAIL64 "GETHZ TSC differs from CPUID 0x40000010"
4:      movl apic_khz, %eax
        imulq $1000, %rax
        cmpq %rax, %r8
        je 5f
        FAIL64 "GETHZ APIC bus differs from CPUID 0x40000010"

5:      movl $CMD_STEALCLOCK, %ecx      # the probe: __stealclock_disable
        xorl %ebx, %ebx
        xorl %esi, %esi
        movl $1, %edi
        call backdoor
        cmpl $0xffffffff, %eax
        je 6f
        FAIL64 "backdoor STEALCLOCK: want 0xffffffff (not available)"
6:      PUTS64 "vmwballoon: backdoor STEALCLOCK: not available\n"

        movl $CMD_GETVCPU_INFO, %ecx
        movl $0xffffffff, %ebx
        call backdoor
        btl $31, %eax
        jnc 7f
        FAIL64 "backdoor GETVCPU_INFO: reserved bit 31 set"
7:      PUTS64 "vmwballoon: backdoor GETVCPU_INFO: 0x"
        call hex32_64
        shrl $3, %eax
        andl $1, %eax
        cmpl x2apic, %eax
        je 8f
        FAIL64 "GETVCPU_INFO LEGACY_X2APIC differs from CPUID.1:ECX[21]"
8:      PUTS64 " (LEGACY_X2APIC matches CPUID.1:ECX.x2APIC)\n"

        movl $30, %ecx                  # not a command kvmm knows
        call backdoor
        cmpl $0xffffffff, %eax
        je 9f
        FAIL64 "backdoor: an unknown command did not read 0xffffffff"
9:      movl $0x564d5869, %eax          # wrong magic
        movl $CMD_GETVERSION, %ecx
        movl $VMWARE_PORT, %edx
        inl (%dx), %eax
        cmpl $0xffffffff, %eax
        je 10f
        FAIL64 "backdoor: a wrong magic did not read 0xffffffff"
10:     PUTS64 "vmwballoon: backdoor: unknown command and wrong magic read 0xffffffff\n"
        ret

# ---------------------------------------------------------------------------
# The balloon protocol.
# ---------------------------------------------------------------------------

# balloon: RCX = command, RBX = arg1, RSI = arg2; __vmballoon_cmd's asm.
# RAX = status, RBX = result, RCX = capabilities after START. RDX, RSI
# clobbered (the driver treats them so).
balloon:
        movl $BALLOON_MAGIC, %eax
        movl $BALLOON_PORT, %edx
        inl (%dx), %eax
        ret

# balloon_reset: vmballoon_reset's commands.
balloon_reset:
        movl $B_DOORBELL_SET, %ecx      # vmballoon_vmci_cleanup
        movl $VMCI_INVALID_ID, %ebx
        movl $VMCI_INVALID_ID, %esi
        call balloon
        cmpl $1, %eax
        jbe 1f
        FAIL64 "VMCI_DOORBELL_SET(~0, ~0): status not 0 or 1"
1:      movl $B_START, %ecx
        movl $CAPS_REQUESTED, %ebx
        xorl %esi, %esi
        call balloon
        cmpl $SUCCESS_WITH_CAPS, %eax
        je 2f
        FAIL64 "START: status is not SUCCESS_WITH_CAPABILITIES"
2:      movl %ecx, caps
        movl %ecx, %eax
        andl $(CAP_BASIC | CAP_BATCHED | CAP_BATCHED_2M | CAP_SIGNALLED_WAKEUP), %eax
        cmpl $(CAP_BASIC | CAP_BATCHED | CAP_BATCHED_2M), %eax
        je 3f
        FAIL64 "START: want BASIC, BATCHED and BATCHED_2M granted, SIGNALLED_WAKEUP not"
3:      movl $B_GUEST_ID, %ecx
        movl $1, %ebx
        xorl %esi, %esi
        call balloon
        testl %eax, %eax
        jz 4f
        FAIL64 "GUEST_ID: status not 0"
4:      ret

# wait_target: vmballoon_send_get_target until R12's condition holds:
# WAIT_NONZERO (a target), WAIT_ZERO (target 0), WAIT_RESET (status 7).
# Results: EAX = status, RBX = target. FAILs after ~30 s.
wait_target:
        xorl %r14d, %r14d               # PM timer ticks waited
        movl $WAIT_POLLS, %r13d
        movl pm_tmr, %edx
        xorl %eax, %eax
        testl %edx, %edx
        jz 1f
        inl (%dx), %eax
1:      movl %eax, %r15d                # last PM timer reading
2:      movl $B_GET_TARGET, %ecx
        movq ram_frames, %rbx
        xorl %esi, %esi
        call balloon
        cmpl $WAIT_RESET, %r12d
        jne 3f
        cmpl $ST_RESET, %eax
        je 9f
        testl %eax, %eax
        jz 5f
        FAIL64 "GET_TARGET failed while waiting for a reset"
3:      testl %eax, %eax
        jz 4f
        FAIL64 "GET_TARGET failed"
4:      testq %rbx, %rbx
        setnz %cl
        movzbl %cl, %ecx
        xorl $1, %ecx                   # ECX = 1 when the target is 0
        cmpl %r12d, %ecx
        je 9f
5:      movl pm_tmr, %edx
        testl %edx, %edx
        jz 6f
        movl %eax, %r8d                 # keep the status
        inl (%dx), %eax
        movl %eax, %ecx
        subl %r15d, %ecx
        andl $0xffffff, %ecx            # 24-bit timer; fine for 32-bit too
        addq %rcx, %r14
        movl %eax, %r15d
        movl %r8d, %eax
        cmpq $WAIT_TICKS, %r14
        jae 7f
6:      decl %r13d
        jnz 2b
7:      FAIL64 "timed out waiting for the host (~30 s)"
9:      ret

# touch: write MARK into every 4 KiB page of the 2M page and of the 4K
# pages, and the batch page: all resident before the host's first count.
touch:
        movl $HUGE, %edi
1:      movl $MARK, (%rdi)
        addl $4096, %edi
        cmpl $SMALL + 512 * 4096, %edi
        jb 1b
        movl $0, BATCH
        movl $MARK, POPPED
        movl $MARK, NEVER
        ret

# one_entry: EAX = page address, ECX = a batched command. Sends a one-entry
# batch (as balloon compaction does). EAX = the entry's status; FAILs when
# the command itself fails or RBX is not the target.
one_entry:
        movq %rax, BATCH
        movl $BATCH >> 12, %ebx
        movl $1, %esi
        call balloon
        testl %eax, %eax
        jz 1f
        FAIL64 "a one-entry batch failed as a whole"
1:      cmpq target, %rbx
        je 2f
        FAIL64 "a lock/unlock reply's RBX is not the target"
2:      movq BATCH, %rax
        andl $0x1f, %eax
        ret

# fill_small: the batch page = the 512 4K pages.
fill_small:
        movl $BATCH, %edi
        movl $SMALL, %eax
1:      movq %rax, (%rdi)
        addl $8, %edi
        addl $4096, %eax
        cmpl $SMALL + 512 * 4096, %eax
        jb 1b
        ret

# check_batch: ESI = entries; FAIL unless every status is 0.
check_batch:
        movl $BATCH, %edi
1:      testb $0x1f, (%rdi)
        jz 2f
        FAIL64 "a batch entry's status is not 0"
2:      addl $8, %edi
        decl %esi
        jnz 1b
        ret

# inflate: vmballoon_inflate with 2M pages first, then 4K.
inflate:
        movq $HUGE, BATCH
        movl $B_BATCHED_2M_LOCK, %ecx
        movl $BATCH >> 12, %ebx
        movl $1, %esi
        call balloon
        testl %eax, %eax
        jz 1f
        FAIL64 "BATCHED_2M_LOCK failed"
1:      cmpq target, %rbx
        je 2f
        FAIL64 "BATCHED_2M_LOCK: RBX is not the target"
2:      movl $1, %esi
        call check_batch
        PUTS64 "vmwballoon: BATCHED_2M_LOCK of 1 page: status 0, RBX = target\n"
        call fill_small
        movl $B_BATCHED_LOCK, %ecx
        movl $BATCH >> 12, %ebx
        movl $512, %esi
        call balloon
        testl %eax, %eax
        jz 3f
        FAIL64 "BATCHED_LOCK failed"
3:      cmpq target, %rbx
        je 4f
        FAIL64 "BATCHED_LOCK: RBX is not the target"
4:      movl $512, %esi
        call check_batch
        PUTS64 "vmwballoon: BATCHED_LOCK of 512 pages: every status 0, RBX = target\n"
        ret

# EXPECT_ENTRY addr, cmd, status, what: a one-entry batch must give status.
.macro EXPECT_ENTRY addr, cmd, status, what
        movq \addr, %rax
        movl $\cmd, %ecx
        call one_entry
        cmpl $\status, %eax
        je .Lentry_ok\@
        FAIL64 "\what: wrong status"
.Lentry_ok\@:
        PUTS64 "vmwballoon: \what: status \status\n"
.endm

refusals:
        # (statuses as numbers, for the messages: 2 PPN_INVALID,
        # 3 PPN_LOCKED, 4 PPN_UNLOCKED)
        EXPECT_ENTRY $(SMALL+0x5000), B_BATCHED_LOCK, 3, "lock a locked page"
        EXPECT_ENTRY $(HUGE+0x3000), B_BATCHED_LOCK, 3, "lock a 4K page inside the locked 2M page"
        EXPECT_ENTRY $SMALL, B_BATCHED_2M_LOCK, 3, "lock a 2M page over locked 4K pages"
        EXPECT_ENTRY $(HUGE+0x1000), B_BATCHED_2M_LOCK, 2, "lock a misaligned 2M page"
        EXPECT_ENTRY ram_top, B_BATCHED_LOCK, 2, "lock the page past the end of RAM"
        EXPECT_ENTRY $NEVER, B_BATCHED_UNLOCK, 4, "unlock a page never locked"
        ret

# deflate: vmballoon_deflate, 4K pages first, then the 2M page.
deflate:
        call fill_small
        movl $B_BATCHED_UNLOCK, %ecx
        movl $BATCH >> 12, %ebx
        movl $512, %esi
        call balloon
        testl %eax, %eax
        jz 1f
        FAIL64 "BATCHED_UNLOCK failed"
1:      testq %rbx, %rbx
        jz 2f
        FAIL64 "BATCHED_UNLOCK: RBX is not the target 0"
2:      movl $512, %esi
        call check_batch
        movq $HUGE, BATCH
        movl $B_BATCHED_2M_UNLOCK, %ecx
        movl $BATCH >> 12, %ebx
        movl $1, %esi
        call balloon
        testl %eax, %eax
        jz 3f
        FAIL64 "BATCHED_2M_UNLOCK failed"
3:      movl $1, %esi
        call check_batch
        PUTS64 "vmwballoon: unlocked 512 4K pages and 1 2M page: every status 0, RBX = 0\n"
        # The host dropped their memory: the marks are gone.
        movl $HUGE, %edi
4:      cmpl $0, (%rdi)
        je 5f
        FAIL64 "an unlocked page still holds what the guest wrote before locking it"
5:      addl $0x41000, %edi             # a sample of pages across both ranges
        cmpl $SMALL + 512 * 4096, %edi
        jb 4b
        movl $MARK, SMALL + 0x7000      # and they work again
        cmpl $MARK, SMALL + 0x7000
        je 6f
        FAIL64 "an unlocked page does not keep a write"
6:      PUTS64 "vmwballoon: unlocked pages read as zero and take writes again\n"
        ret

# ---------------------------------------------------------------------------
# 64-bit output helpers (lib.inc's print_* are 32-bit code).
# ---------------------------------------------------------------------------

# dec64: RAX as unsigned decimal. Preserves every register.
dec64:
        pushq %rax
        pushq %rcx
        pushq %rdx
        pushq %rbx
        movl $10, %ebx
        xorl %ecx, %ecx
1:      xorl %edx, %edx
        divq %rbx
        pushq %rdx
        incl %ecx
        testq %rax, %rax
        jnz 1b
2:      popq %rax
        addb $'0', %al
        call putc64
        decl %ecx
        jnz 2b
        popq %rbx
        popq %rdx
        popq %rcx
        popq %rax
        ret

# hex32_64: EAX as 8 hex digits. Preserves every register.
hex32_64:
        pushq %rax
        pushq %rcx
        pushq %rdx
        movl %eax, %edx
        movl $8, %ecx
1:      roll $4, %edx
        movl %edx, %eax
        andl $0xf, %eax
        movb hex_digits(%rax), %al
        call putc64
        decl %ecx
        jnz 1b
        popq %rdx
        popq %rcx
        popq %rax
        ret

nl64:
        pushq %rax
        movb $'\n', %al
        call putc64
        popq %rax
        ret

        .code32

        .data
        .balign 8
ram_frames:
        .quad 0                         # totalram_pages, from the memory map
target:
        .quad 0                         # the last target the host gave
ram_top:
        .quad 0                         # the first address past RAM
tsc_khz:
        .long 0
apic_khz:
        .long 0
x2apic:
        .long 0
caps:
        .long 0

        # Identity map of the first 1 GiB with 2 MiB pages, as probe.S.
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
