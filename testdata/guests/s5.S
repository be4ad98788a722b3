# s5.S: ACPI soft-off (S5), the way Linux powers a machine off.
#
# Finds the FADT and hands it to acpi_pm.inc (shared with selftest.S, which
# describes the Linux code it mirrors): PM1a_EVT/PM1a_CNT, the DSDT, \_S5_'s
# SLP_TYPa from the AML, then the two PM1a_CNT writes of
# acpi_hw_legacy_sleep. A correct VMM powers off on the second write (QEMU:
# status 0). If execution continues past it (bounded spin), the guest prints
# FAIL and exits with 0x11.

        .include "lib.inc"
        .include "acpi_pm.inc"
        GUEST s5

        .text
        .code32
guest_main:
        PUTS "s5: looking for the FADT\n"
        movl $0x50434146, %eax          # "FACP"
        call acpi_find_table
        testl %eax, %eax
        jnz 1f
        FAIL "no valid FADT (FACP) table"
1:      movl %eax, %ebx                 # EBX = FADT
        PUTS "FADT "
        call print_hex32
        PUTS " rev "
        movzbl 8(%ebx), %eax
        call print_dec
        PUTS " len "
        movl 4(%ebx), %eax
        call print_dec
        call newline

        call acpi_s5_setup              # PM1a_CNT, DSDT, \_S5_ (or FAIL)
        PUTS "s5: writing SLP_TYP, then SLP_TYP|SLP_EN to PM1a_CNT\n"
        call acpi_s5_enter              # returns only if still running
        FAIL "still running after SLP_EN (no power-off)"
