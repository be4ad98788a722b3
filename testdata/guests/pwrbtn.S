# pwrbtn.S: the ACPI fixed power button, delivered as an SCI through the
# IOAPIC, the way Linux sets it up and handles it.
#
# Mirrors:
#  * acpi_enable (drivers/acpi/acpica/evxfevnt.c): when PM1_CNT.SCI_EN is
#    clear, write the FADT's ACPI_ENABLE to SMI_CMD and wait for SCI_EN.
#  * acpi_parse_ioapic / acpi_parse_int_src_ovr / acpi_sci_ioapic_setup
#    (arch/x86/kernel/acpi/boot.c): the MADT's IOAPIC entry gives the MMIO
#    address and GSI base; an interrupt source override whose source is the
#    FADT's SCI_INT gives the SCI's GSI, polarity and trigger; without one the
#    SCI is GSI = SCI_INT, level-triggered, active low (the ACPI default).
#  * init_8259A / setup_local_APIC: the 8259s are masked once the IOAPIC is
#    used, the local APIC is software-enabled through SVR, TPR = 0, LINT0
#    (ExtINT) masked.
#  * ioapic_write_entry (arch/x86/kernel/apic/io_apic.c): the redirection
#    entry's high dword (destination APIC ID) first, then the low dword
#    (vector, trigger, polarity, unmasked).
#  * acpi_install_fixed_event_handler(ACPI_EVENT_POWER_BUTTON): clear
#    PWRBTN_STS, then set PWRBTN_EN in PM1_EN (PM1a_EVT + PM1_EVT_LEN/2).
#  * acpi_ev_fixed_event_detect: the SCI handler reads PM1_STS, checks
#    PWRBTN_STS and acknowledges it (write one to clear).
#
# After "pwrbtn: ready" the guest enables interrupts and loops forever,
# incrementing a counter and writing it to the POST port 0x80 (so a VMM's
# per-port counters show it running, and stop moving while it is paused).
# The SCI handler prints "pwrbtn: power button pressed" and "PASS pwrbtn"
# and powers off through ACPI S5 (QEMU: status 0). It never returns: this
# host's KVM runs kernel-mode guest code through an instruction emulator that
# cannot execute IRET, so every interrupt or exception ends the guest. Any
# vector other than the SCI's prints its number and FAILs.

        .include "lib.inc"
        .include "smp.inc"
        .include "acpi_pm.inc"
        GUEST pwrbtn

        .set SCI_VECTOR, 0x40
        .set IOAPIC_DEFAULT_ADDR, 0xfec00000
        .set IOAPIC_REGSEL, 0x00        # register index (MMIO +0)
        .set IOAPIC_WIN, 0x10           # register data (MMIO +0x10)
        .set IOAPIC_REG_VER, 0x01       # bits 23:16: highest redirection entry
        .set IOAPIC_REG_REDTBL, 0x10    # entry n: 0x10 + 2n (low), 0x11 + 2n (high)
        .set RTE_ACTIVE_LOW, 1 << 13
        .set RTE_LEVEL, 1 << 15
        .set LVT_MASKED, 1 << 16

        .set MADT_TYPE_IOAPIC, 1
        .set MADT_TYPE_ISO, 2
        .set INTI_POLARITY_HIGH, 1      # MPS INTI flags bits 1:0
        .set INTI_TRIGGER_EDGE, 1       # MPS INTI flags bits 3:2

        .set FADT_SCI_INT, 46           # u16: the SCI's ISA IRQ
        .set FADT_SMI_CMD, 48           # u32: SMI command port (0: none)
        .set FADT_ACPI_ENABLE, 52       # u8: value to write to SMI_CMD
        .set FADT_PM1_EVT_LEN, 88       # u8: PM1_STS + PM1_EN bytes

        .set PM1_PWRBTN, 1 << 8         # PM1_STS.PWRBTN_STS, PM1_EN.PWRBTN_EN
        .set PM1_CNT_SCI_EN, 1 << 0
        .set ACPI_ENABLE_LOOPS, 100000  # bounded wait for SCI_EN

        .set LAPIC_TPR, 0x80
        .set LAPIC_LVT_LINT0, 0x350
        .set PIC1_IMR, 0x21
        .set PIC2_IMR, 0xa1
        .set POST_PORT, 0x80

        .set IDT_ENTRIES, 256
        .set IDT_GATE_INTR32, 0x8e00    # present, DPL 0, 32-bit interrupt gate
        .set STUB_SIZE, 8               # one "call" per vector, 8-byte slots

        .text
        .code32
guest_main:
        PUTS "pwrbtn: looking for the FADT\n"
        movl $0x50434146, %eax          # "FACP"
        call acpi_find_table
        testl %eax, %eax
        jnz 1f
        FAIL "no valid FADT (FACP) table"
1:      movl %eax, %ebx                 # EBX = FADT
        call acpi_s5_setup              # PM1a_EVT, PM1a_CNT, \_S5_ (or FAIL)
        cmpl $0, pm1a_evt
        jne 2f
        FAIL "FADT has no PM1a_EVT_BLK"
2:      movzbl FADT_PM1_EVT_LEN(%ebx), %eax
        shrl $1, %eax                   # PM1_EN follows PM1_STS
        addl pm1a_evt, %eax
        movl %eax, pm1a_en
        movzwl FADT_SCI_INT(%ebx), %eax
        movl %eax, sci_irq
        call acpi_mode_enable

        movl $0x43495041, %eax          # "APIC"
        call acpi_find_table
        testl %eax, %eax
        jnz 3f
        FAIL "no valid MADT (APIC) table"
3:      movl %eax, %ebx                 # EBX = MADT
        call lapic_init                 # xAPIC on, SVR enable, bsp_apic_id
        call madt_sci_route

        call pic_mask_all
        call lapic_setup
        call idt_setup
        call ioapic_route_sci
        call pwrbtn_enable

        PUTS "pwrbtn: ready\n"
        xorl %eax, %eax
        sti
4:      incl %eax                       # the counter a VMM sees on port 0x80
        outb %al, $POST_PORT
        jmp 4b

# acpi_mode_enable: EBX = FADT (pm1a_cnt set by acpi_s5_setup). Leaves the
# machine in ACPI mode (SCI_EN set) or FAILs.
acpi_mode_enable:
        pushal
        movl pm1a_cnt, %edx
        inw %dx, %ax
        testw $PM1_CNT_SCI_EN, %ax
        jz 1f
        PUTS "pwrbtn: SCI_EN already set\n"
        jmp 9f
1:      movl FADT_SMI_CMD(%ebx), %edx
        testl %edx, %edx
        jnz 2f
        FAIL "SCI_EN clear and the FADT has no SMI_CMD"
2:      movb FADT_ACPI_ENABLE(%ebx), %al
        outb %al, %dx
        movl pm1a_cnt, %edx
        movl $ACPI_ENABLE_LOOPS, %ecx
3:      inw %dx, %ax
        testw $PM1_CNT_SCI_EN, %ax
        jnz 4f
        decl %ecx
        jnz 3b
        FAIL "SCI_EN still clear after ACPI_ENABLE was written to SMI_CMD"
4:      PUTS "pwrbtn: ACPI mode enabled through SMI_CMD\n"
9:      popal
        ret

# madt_sci_route: EBX = MADT, sci_irq set. Finds the first IOAPIC (both
# kvmm and QEMU have one; a guest for several would pick the one whose GSI
# range holds the SCI) and the SCI's override. Sets ioapic_base,
# ioapic_gsi_base, sci_gsi and sci_rte_bits, and prints
# "SCI irq=<n> gsi=<n> ioapic=<addr> rte=<bits>".
madt_sci_route:
        pushal
        movl $IOAPIC_DEFAULT_ADDR, ioapic_base
        movl $0, ioapic_gsi_base
        movl sci_irq, %eax
        movl %eax, sci_gsi
        xorl %edi, %edi                 # EDI = override flags (0: conforming)
        xorl %ebp, %ebp                 # EBP = 1 once an IOAPIC was seen
        movl 4(%ebx), %ecx
        leal (%ebx,%ecx), %ecx          # end of table
        leal 44(%ebx), %esi             # first entry
1:      leal 2(%esi), %edx
        cmpl %ecx, %edx
        ja 8f
        movzbl 1(%esi), %edx            # entry length
        cmpl $2, %edx
        jb 8f                           # malformed: stop
        leal (%esi,%edx), %eax
        cmpl %ecx, %eax
        ja 8f                           # entry runs past the table
        cmpb $MADT_TYPE_IOAPIC, (%esi)
        jne 2f
        cmpl $12, %edx
        jb 3f
        testl %ebp, %ebp
        jnz 3f
        movl 4(%esi), %eax
        movl %eax, ioapic_base
        movl 8(%esi), %eax
        movl %eax, ioapic_gsi_base
        movl $1, %ebp
        jmp 3f
2:      cmpb $MADT_TYPE_ISO, (%esi)
        jne 3f
        cmpl $10, %edx
        jb 3f
        cmpb $0, 2(%esi)                # bus 0: ISA
        jne 3f
        movzbl 3(%esi), %eax            # source IRQ
        cmpl sci_irq, %eax
        jne 3f
        movl 4(%esi), %eax
        movl %eax, sci_gsi
        movzwl 8(%esi), %edi
3:      addl %edx, %esi
        jmp 1b

8:      # Trigger (bits 3:2): level unless the override says edge. Polarity
        # (bits 1:0): active low unless it says high. Conforming and the
        # reserved encodings take the SCI's default, as Linux does.
        xorl %eax, %eax
        movl %edi, %edx
        shrl $2, %edx
        andl $3, %edx
        cmpl $INTI_TRIGGER_EDGE, %edx
        je 4f
        orl $RTE_LEVEL, %eax
4:      movl %edi, %edx
        andl $3, %edx
        cmpl $INTI_POLARITY_HIGH, %edx
        je 5f
        orl $RTE_ACTIVE_LOW, %eax
5:      movl %eax, sci_rte_bits
        PUTS "SCI irq="
        movl sci_irq, %eax
        call print_dec
        PUTS " gsi="
        movl sci_gsi, %eax
        call print_dec
        PUTS " ioapic="
        movl ioapic_base, %eax
        call print_hex32
        PUTS " rte="
        movl sci_rte_bits, %eax
        call print_hex32
        call newline
        popal
        ret

# pic_mask_all: mask every 8259 input (OCW1), so that only the IOAPIC
# delivers interrupts (Linux: mask_8259A when the IOAPIC is used). Under
# firmware the PIT is running on IRQ 0 and would otherwise arrive through
# the PIC as an ExtINT.
pic_mask_all:
        pushl %eax
        movb $0xff, %al
        outb %al, $PIC1_IMR
        outb %al, $PIC2_IMR
        popl %eax
        ret

# lapic_setup: accept every priority (TPR = 0) and mask LINT0, the
# virtual-wire ExtINT input that is unused once the IOAPIC is in charge.
lapic_setup:
        pushl %eax
        pushl %ebp
        movl lapic_base, %ebp
        movl $0, LAPIC_TPR(%ebp)
        movl LAPIC_LVT_LINT0(%ebp), %eax
        orl $LVT_MASKED, %eax
        movl %eax, LAPIC_LVT_LINT0(%ebp)
        popl %ebp
        popl %eax
        ret

# idt_setup: a 256-entry IDT of 32-bit interrupt gates: SCI_VECTOR goes to
# sci_handler, every other vector to its stub in intr_stubs.
idt_setup:
        pushal
        movl $idt, %edi
        movl $intr_stubs, %esi
        xorl %ecx, %ecx
1:      movl %esi, %eax
        cmpl $SCI_VECTOR, %ecx
        jne 2f
        movl $sci_handler, %eax
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

# ioapic_route_sci: program the SCI's redirection entry: SCI_VECTOR, fixed
# delivery, physical destination bsp_apic_id, the trigger and polarity of
# madt_sci_route, unmasked. FAILs when the pin is not on the IOAPIC.
ioapic_route_sci:
        pushal
        movl ioapic_base, %ebp
        movl sci_gsi, %ecx
        subl ioapic_gsi_base, %ecx      # ECX = pin
        jae 1f
        FAIL "SCI GSI below the IOAPIC's GSI base"
1:      movl $IOAPIC_REG_VER, IOAPIC_REGSEL(%ebp)
        movl IOAPIC_WIN(%ebp), %eax
        shrl $16, %eax
        andl $0xff, %eax                # highest entry index
        cmpl %eax, %ecx
        jbe 2f
        FAIL "SCI GSI beyond the IOAPIC's redirection entries"
2:      leal IOAPIC_REG_REDTBL(,%ecx,2), %edx
        leal 1(%edx), %eax
        movl %eax, IOAPIC_REGSEL(%ebp)  # high dword first
        movl bsp_apic_id, %eax
        shll $24, %eax
        movl %eax, IOAPIC_WIN(%ebp)
        movl %edx, IOAPIC_REGSEL(%ebp)  # then the low dword, which unmasks
        movl sci_rte_bits, %eax
        orl $SCI_VECTOR, %eax
        movl %eax, IOAPIC_WIN(%ebp)
        popal
        ret

# pwrbtn_enable: clear a stale PWRBTN_STS (write one to clear), then set
# PWRBTN_EN, keeping the other enable bits.
pwrbtn_enable:
        pushl %eax
        pushl %edx
        movl pm1a_evt, %edx
        movw $PM1_PWRBTN, %ax
        outw %ax, %dx
        movl pm1a_en, %edx
        inw %dx, %ax
        orw $PM1_PWRBTN, %ax
        outw %ax, %dx
        popl %edx
        popl %eax
        ret

# sci_handler: entered through an interrupt gate (IF clear). Never returns.
sci_handler:
        movl pm1a_evt, %edx
        inw %dx, %ax
        testw $PM1_PWRBTN, %ax
        jnz 1f
        PUTS "pwrbtn: SCI with PM1_STS="
        movzwl %ax, %eax
        call print_hex32
        call newline
        FAIL "SCI without PWRBTN_STS"
1:      movw $PM1_PWRBTN, %ax
        outw %ax, %dx                   # acknowledge the event
        PUTS "pwrbtn: power button pressed\n"
        call print_pass_line
        call acpi_s5_enter              # returns only if still running
        FAIL "still running after SLP_EN (no power-off)"

# unexpected_interrupt: reached by "call" from the stub of a vector other
# than SCI_VECTOR; the stub's return address gives the vector.
unexpected_interrupt:
        popl %eax
        subl $(intr_stubs + 5), %eax    # "call rel32" is 5 bytes
        shrl $3, %eax                   # / STUB_SIZE
        PUTS "pwrbtn: unexpected interrupt or exception, vector "
        call print_dec
        call newline
        FAIL "unexpected interrupt or exception"

        .balign STUB_SIZE
intr_stubs:
        .rept IDT_ENTRIES
        call unexpected_interrupt
        .balign STUB_SIZE
        .endr

        .data
        .balign 4
        .word 0                         # pad so the base is 4-aligned
idt_desc:
        .word IDT_ENTRIES * 8 - 1
        .long idt
pm1a_en:
        .long 0
sci_irq:
        .long 0
sci_gsi:
        .long 0
sci_rte_bits:
        .long 0
ioapic_base:
        .long 0
ioapic_gsi_base:
        .long 0

        .bss
        .balign 8
idt:
        .skip IDT_ENTRIES * 8
