# s3.S: ACPI S3 (suspend to RAM) the way Linux does it, and a resume the way
# firmware resumes Linux: through the FACS waking vector, in real mode.
#
# Mirrors:
#  * acpi_sleep_prepare -> acpi_set_waking_vector (drivers/acpi/sleep.c):
#    FACS firmware_waking_vector (offset 12, u32) = the physical address of
#    16-bit wakeup code below 1 MiB, X_firmware_waking_vector (offset 24) = 0.
#  * rtc-cmos + the ACPI fixed RTC event, for `rtcwake -m mem` (option
#    s3.rtc): the CMOS alarm ~2 s ahead with AIE, and PM1_EN.RTC_EN.
#  * acpi_hw_legacy_sleep (acpica/hwsleep.c): clear WAK_STS and the fixed
#    status bits, PM1a_CNT = SLP_TYP, wbinvd, PM1a_CNT = SLP_TYP | SLP_EN,
#    then spin on PM1_STS.WAK_STS (all in acpi_pm.inc).
#  * arch/x86/realmode/rm/wakeup_asm.S: the wakeup code is entered in real
#    mode at CS = vector >> 4, IP = vector & 0xF (or any other CS:IP split),
#    starts with cli; cld; ljmpw to its own segment, builds its own state
#    (segments, stack, flags) and goes on to protected mode.
#
# The wakeup page (WAKE_ADDR, below 1 MiB) holds the stub and, like Linux's
# wakeup header, the state the guest needs after a wake: the RAM magic, the
# cycle counter, the options and the PM1 ports. It is not part of the loaded
# image on purpose: QEMU re-copies a -kernel ELF's segments into RAM on every
# system reset, the S3 wake included, so the image's .data comes back with
# its ELF contents there (the guest reports which it saw). A second RAM check
# sits at HIGH_CHECK (2 MiB), outside the image too.
#
# The stub records the CS it was entered with, the machine status word
# (CR0.PE must be 0) and PM1_STS (read at once with a 16-bit IN from
# PM1a_EVT, whose port is in its data area), then loads this guest's GDT,
# sets CR0.PE and far-jumps to s3_resume32 at 1 MiB (paging is off). That
# code rebuilds the segments, stack and flags, re-initialises COM1, restores
# its variables from the wakeup page and prints
#   s3: resumed in real mode at CS:IP=XXXX:XXXX, PM1_STS=0xNNNN
# then checks: the RAM magics and the cycle counter survived; WAK_STS
# (bit 15) and the wake reason, RTC_STS (bit 10) with s3.rtc, else
# PWRBTN_STS (bit 8) (a host-requested wake: QEMU's system_wakeup, kvmm's
# API); clears them (write 1) and checks they cleared; sets SCI_EN as Linux
# does after resume and checks it reads 1.
#
# If the spin after SLP_EN sees WAK_STS without a reset (a VMM that resumes
# the vCPU where it stopped): FAIL "resumed without going through the waking
# vector". If it never does (~10 s by the PM timer): FAIL "no wake".
#
# Command line:
#   s3.rtc          wake by the RTC alarm (~2 s) instead of by the host
#   s3.cycles=N     suspend and resume N times (1-9, default 1)
# The options are read before the first suspend (the boot structures may be
# gone after a wake).

        .include "lib.inc"
        .include "acpi_pm.inc"
        GUEST s3

        .set WAKE_ADDR, 0x3000          # one page below 1 MiB, RAM, clear of
                                        # kvmm's and SeaBIOS's boot data
        .set WAKE_SEG, WAKE_ADDR >> 4
        .set WAKE_SIG, 0x51ee1111       # Linux's WAKEUP_HEADER_SIGNATURE
        .set S3_MAGIC, 0x5333aa55
        .set HIGH_CHECK, 0x200000       # 2 MiB: RAM, above the image
        .set RTC_WAKE_SECONDS, 2
        .set MAX_CYCLES, 9
        .set ST_SIZE, 36                # the ST_* fields below

        # WK_* and ST_* (the wakeup page's fields) follow the stub below.

        .text
        .code32
guest_main:
        # Options, while the command line is surely there.
        movl $opt_rtc, %esi
        call cmdline_has
        movl %eax, s3_rtc
        movl $opt_cycles, %esi
        call cmdline_value              # EAX = after "s3.cycles=", or 0
        testl %eax, %eax
        jz 2f
        movzbl (%eax), %ecx
        subl $'1', %ecx
        cmpl $(MAX_CYCLES - 1), %ecx
        ja 1f
        cmpb $' ', 1(%eax)              # one digit, then a space or the end
        ja 1f
        incl %ecx
        movl %ecx, s3_cycles
        jmp 2f
1:      FAIL "s3.cycles must be 1-9"
2:      PUTS "s3: cycles="
        movl s3_cycles, %eax
        call print_dec
        PUTS " wake="
        cmpl $0, s3_rtc
        je 3f
        PUTS "rtc\n"
        jmp 4f
3:      PUTS "host\n"

4:      movl $0x50434146, %eax          # "FACP"
        call acpi_find_table
        testl %eax, %eax
        jnz 5f
        FAIL "no valid FADT (FACP) table"
5:      movl %eax, %ebx                 # EBX = FADT
        PUTS "FADT "
        call print_hex32
        call newline
        call acpi_s3_setup              # PM1, DSDT, \_S3_, FACS (or FAIL)

        # The wakeup page and the high check: RAM per the memory map, clear
        # of the boot structures (Linux reserves its trampoline likewise).
        movl $WAKE_ADDR, %eax
        movl $4096, %ecx
        call memmap_is_ram
        testl %eax, %eax
        jnz 6f
        FAIL "wakeup page 0x3000 is not RAM in the memory map"
6:      movl $WAKE_ADDR, %eax
        call boot_info_overlaps
        jz 7f
        FAIL "boot structures overlap the wakeup page 0x3000"
7:      movl $HIGH_CHECK, %eax
        movl $8, %ecx
        call memmap_is_ram
        testl %eax, %eax
        jnz 8f
        FAIL "RAM check address 0x200000 is not RAM in the memory map"
8:      movl $HIGH_CHECK, %eax
        call boot_info_overlaps
        jz 9f
        FAIL "boot structures overlap the RAM check at 0x200000"

9:      # The wakeup page: stub, then the state to keep.
        movl $wakeup_stub, %esi
        movl $WAKE_ADDR, %edi
        movl $(wakeup_stub_end - wakeup_stub), %ecx
1:      movb (%esi), %al
        movb %al, (%edi)
        incl %esi
        incl %edi
        decl %ecx
        jnz 1b
        movl pm1a_evt, %eax
        movw %ax, WK_PM1_EVT
        movl $S3_MAGIC, ST_MAGIC
        movl s3_cycles, %eax
        movl %eax, ST_CYCLES
        movl s3_rtc, %eax
        movl %eax, ST_RTC
        movl pm1a_cnt, %eax
        movl %eax, ST_PM1A_CNT
        movl pm_tmr, %eax
        movl %eax, ST_PM_TMR
        movl slp_typ_s3, %eax
        movl %eax, ST_SLP_TYP
        movl facs_addr, %eax
        movl %eax, ST_FACS
        movl $S3_MAGIC, HIGH_CHECK
        movl $~S3_MAGIC, HIGH_CHECK+4

# One suspend/resume cycle; s3_resume32 comes back here for the next one.
s3_cycle:
        movl ST_CYCLE, %eax
        incl %eax
        movl %eax, ST_CYCLE
        notl %eax
        movl %eax, ST_CYCLE_INV
        movl $S3_MAGIC, s3_image_mark   # in the image's .data (see above)
        movw $0, WK_CS                  # the stub's results
        movw $0, WK_IP
        movw $0xffff, WK_MSW
        movw $0, WK_PM1_STS
        movw $0, WK_ENTERED

        movl $WAKE_ADDR, %eax
        call acpi_set_waking_vector
        PUTS "s3: waking vector "
        call print_hex32
        PUTS " in FACS "
        movl facs_addr, %eax
        call print_hex32
        call newline

        cmpl $0, s3_rtc
        je 2f
        movl $RTC_WAKE_SECONDS, %eax
        call rtc_set_alarm              # prints "rtc: now ... alarm ..."
        call acpi_rtc_wake_enable

2:      PUTS "s3: entering S3 (cycle "
        movl ST_CYCLE, %eax
        call print_dec
        PUTS ")\n"
        movl slp_typ_s3, %eax
        call acpi_sleep_enter
        call acpi_wait_wak              # EAX = PM1_STS
        testl $PM1_STS_WAK, %eax
        jz 3f
        PUTS "s3: PM1_STS="
        call print_hex16
        PUTS " in the spin after SLP_EN\n"
        FAIL "resumed without going through the waking vector"
3:      PUTS "s3: PM1_STS="
        call print_hex16
        PUTS " after the bounded spin\n"
        FAIL "no wake"

# The 32-bit continuation of the wakeup stub: CS = SEL_CODE32 from our GDT,
# everything else as the reset and the stub left it.
s3_resume32:
        movl $SEL_DATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        movl %eax, %fs
        movl %eax, %gs
        movl $stack_top, %esp
        pushl $0
        popfl                           # IF, DF, AC ... clear
        call serial_init                # the UART was reset too

        PUTS "s3: resumed in real mode at CS:IP="
        movzwl WK_CS, %ebx
        movl %ebx, %eax
        movl $4, %ecx
        call print_hex_n
        PUTS ":"
        movzwl WK_IP, %eax
        call print_hex_n
        PUTS ", PM1_STS="
        movzwl WK_PM1_STS, %eax
        call print_hex16
        call newline
        # CS*16 + IP must be the vector: the IP is measured (call/pop),
        # the CS is the selector, whose base real mode makes CS*16.
        shll $4, %ebx
        movzwl WK_IP, %eax
        addl %ebx, %eax
        cmpl $WAKE_ADDR, %eax
        je 1f
        FAIL "CS*16+IP at entry is not the waking vector"

1:      testb $1, WK_MSW                # CR0.PE at the vector
        jz 1f
        FAIL "waking vector entered with CR0.PE=1 (not real mode)"
1:      cmpw $1, WK_ENTERED
        je 2f
        FAIL "the wakeup stub ran more than once"
2:      cmpl $S3_MAGIC, ST_MAGIC
        jne 3f
        cmpl $S3_MAGIC, HIGH_CHECK
        jne 3f
        cmpl $~S3_MAGIC, HIGH_CHECK+4
        jne 3f
        movl ST_CYCLE, %eax
        notl %eax
        cmpl ST_CYCLE_INV, %eax
        je 4f
3:      FAIL "RAM not preserved across S3 (magic or cycle counter lost)"

4:      # The variables the rest of the guest (and acpi_pm.inc) uses.
        movzwl WK_PM1_EVT, %eax
        movl %eax, pm1a_evt
        movl ST_PM1A_CNT, %eax
        movl %eax, pm1a_cnt
        movl ST_PM_TMR, %eax
        movl %eax, pm_tmr
        movl ST_SLP_TYP, %eax
        movl %eax, slp_typ_s3
        movl ST_FACS, %eax
        movl %eax, facs_addr
        movl ST_RTC, %eax
        movl %eax, s3_rtc
        movl ST_CYCLES, %eax
        movl %eax, s3_cycles
        cmpl $S3_MAGIC, s3_image_mark
        jne 5f
        PUTS "s3: RAM intact (the image's .data too)\n"
        jmp 6f
5:      PUTS "s3: RAM intact; the image's .data was reloaded from the ELF (QEMU -kernel re-copies it on the wake reset)\n"

6:      movzwl WK_PM1_STS, %ebx
        testl $PM1_STS_WAK, %ebx
        jnz 7f
        FAIL "PM1_STS.WAK_STS not set on resume"
7:      cmpl $0, s3_rtc
        je 8f
        testl $PM1_STS_RTC, %ebx
        jnz 9f
        FAIL "RTC wake without PM1_STS.RTC_STS"
8:      testl $PM1_STS_PWRBTN, %ebx
        jnz 9f
        FAIL "host wake without PM1_STS.PWRBTN_STS"

9:      # Acknowledge the wake (write 1 to clear), as ACPICA does.
        andl $(PM1_STS_WAK | PM1_STS_RTC | PM1_STS_PWRBTN), %ebx
        movl pm1a_evt, %edx
        movl %ebx, %eax
        outw %ax, %dx
        inw %dx, %ax
        testw %bx, %ax
        jz 1f
        PUTS "s3: PM1_STS="
        call print_hex16
        PUTS " after the clear\n"
        FAIL "PM1_STS wake bits not cleared by writing 1"
1:      cmpl $0, s3_rtc
        je 2f
        call acpi_rtc_wake_disable
        call rtc_clear_alarm

2:      # Linux after resume: SCI_EN = 1 (acpi_suspend_enter), then use ACPI.
        movl pm1a_cnt, %edx
        inw %dx, %ax
        PUTS "s3: PM1_CNT="
        call print_hex16
        orw $PM1_CNT_SCI, %ax
        outw %ax, %dx
        inw %dx, %ax
        PUTS ", after SCI_EN=1: "
        call print_hex16
        call newline
        testw $PM1_CNT_SCI, %ax
        jnz 3f
        FAIL "PM1_CNT.SCI_EN does not read 1 after resume"

3:      PUTS "s3: cycle "
        movl ST_CYCLE, %eax
        call print_dec
        PUTS " done\n"
        cmpl s3_cycles, %eax
        jb s3_cycle
        PASS

# The wakeup stub, copied to WAKE_ADDR. Entered in 16-bit real mode after a
# CPU reset, at CS:IP with CS*16 + IP = WAKE_ADDR; nothing else is assumed
# (no stack, any DS/ES/SS, flags as reset or as the firmware left them).
        .section .rodata
        .balign 16
        .code16
wakeup_stub:
        cli
        cld
        movw %cs, %ax                   # the CS we were entered with
        xorw %bx, %bx                   # a stack of our own: the top of the
        movw %bx, %ss                   # wakeup page (absolute, so it does
        movw $(WAKE_ADDR + 4096), %sp   # not depend on CS)
        call 1f
1:      popw %cx                        # entry IP + (1b - wakeup_stub)
        ljmpw $WAKE_SEG, $(2f - wakeup_stub)    # position independence
2:      movw $WAKE_SEG, %bx
        movw %bx, %ds
        cmpl $WAKE_SIG, %ds:(wk_sig - wakeup_stub)
        jne 8f
        movw %ax, %ds:(wk_cs - wakeup_stub)
        subw $(1b - wakeup_stub), %cx
        movw %cx, %ds:(wk_ip - wakeup_stub)
        smsw %ds:(wk_msw - wakeup_stub)
        movw %ds:(wk_pm1_evt - wakeup_stub), %dx
        inw %dx, %ax                    # PM1_STS, first thing
        movw %ax, %ds:(wk_pm1_sts - wakeup_stub)
        incw %ds:(wk_entered - wakeup_stub)
        lgdtl %ds:(wk_gdt - wakeup_stub)
        movl %cr0, %eax
        orb $1, %al                     # PE
        movl %eax, %cr0
        ljmpl $SEL_CODE32, $s3_resume32

8:      # Our data is gone: say so on COM1 and exit, all in real mode.
        movw $(wk_clobbered - wakeup_stub), %si
2:      lodsb
        testb %al, %al
        jz 3f
        movw $COM1, %dx
        outb %al, %dx
        jmp 2b
3:      movw $DEBUG_EXIT_PORT, %dx
        movl $EXIT_FAIL, %eax
        outl %eax, %dx
4:      hlt
        jmp 4b

        .balign 4
wk_sig:
        .long WAKE_SIG
wk_gdt:                                 # lgdtl operand: our GDT at 1 MiB
        .word gdt_end - gdt - 1
        .long gdt
wk_pm1_evt:
        .word 0                         # PM1a_EVT port, set before suspending
wk_cs:
        .word 0                         # results, read by s3_resume32
wk_ip:
        .word 0
wk_msw:
        .word 0
wk_pm1_sts:
        .word 0
wk_entered:
        .word 0
        .balign 4
wk_state:
        .skip ST_SIZE                   # ST_* (set by guest_main)
wk_clobbered:
        .asciz "FAIL s3: wakeup stub data clobbered\n"
wakeup_stub_end:
        .code32

        # The stub's data area, by physical address once copied (defined
        # after the stub so that every symbol here is already known).
        .set WK_CS, WAKE_ADDR + (wk_cs - wakeup_stub)
        .set WK_IP, WAKE_ADDR + (wk_ip - wakeup_stub)
        .set WK_MSW, WAKE_ADDR + (wk_msw - wakeup_stub)
        .set WK_PM1_STS, WAKE_ADDR + (wk_pm1_sts - wakeup_stub)
        .set WK_ENTERED, WAKE_ADDR + (wk_entered - wakeup_stub)
        .set WK_PM1_EVT, WAKE_ADDR + (wk_pm1_evt - wakeup_stub)
        # The state kept across S3 (wk_state). Each is written out in full:
        # GAS does not resolve a .set built on another such .set.
        .set ST_MAGIC, WAKE_ADDR + (wk_state - wakeup_stub)         # S3_MAGIC
        .set ST_CYCLE, WAKE_ADDR + (wk_state - wakeup_stub) + 4     # cycles started
        .set ST_CYCLE_INV, WAKE_ADDR + (wk_state - wakeup_stub) + 8 # ~ST_CYCLE
        .set ST_CYCLES, WAKE_ADDR + (wk_state - wakeup_stub) + 12   # s3.cycles=N
        .set ST_RTC, WAKE_ADDR + (wk_state - wakeup_stub) + 16      # s3.rtc: 1
        .set ST_PM1A_CNT, WAKE_ADDR + (wk_state - wakeup_stub) + 20 # what acpi_s3_setup found
        .set ST_PM_TMR, WAKE_ADDR + (wk_state - wakeup_stub) + 24
        .set ST_SLP_TYP, WAKE_ADDR + (wk_state - wakeup_stub) + 28
        .set ST_FACS, WAKE_ADDR + (wk_state - wakeup_stub) + 32

        .section .rodata
opt_rtc:
        .asciz "s3.rtc"
opt_cycles:
        .asciz "s3.cycles="

        .data
s3_rtc:
        .long 0
s3_cycles:
        .long 1
s3_image_mark:
        .long 0                         # S3_MAGIC before each suspend

        .text
