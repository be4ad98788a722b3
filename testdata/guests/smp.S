# smp.S: find the CPUs in the MADT and start the application processors.
#
# The MADT walk, INIT-SIPI-SIPI and the AP trampoline are in smp.inc (shared
# with selftest.S), which describes the Linux code they mirror. This guest:
# finds the MADT, prints "cpus=N bsp_apic_id=B", starts every enabled AP
# (each does "lock incw" on a counter and parks) and prints
# "aps started=M"; PASS when M = N-1 and the count stays there.

        .include "lib.inc"
        .include "smp.inc"
        GUEST smp

        .text
        .code32
guest_main:
        PUTS "smp: looking for the MADT\n"
        movl $0x43495041, %eax          # "APIC"
        call acpi_find_table
        testl %eax, %eax
        jnz 1f
        FAIL "no valid MADT (APIC) table"
1:      movl %eax, %ebx                 # EBX = MADT
        call lapic_init                 # prints "MADT ... lapic=..."

        # Count the enabled Processor Local APIC entries.
        call madt_count_cpus            # EAX = CPUs, EDX = 1 if BSP seen
        movl %eax, ncpus
        PUTS "cpus="
        call print_dec
        PUTS " bsp_apic_id="
        movl bsp_apic_id, %eax
        call print_dec
        call newline
        testl %edx, %edx
        jnz 2f
        FAIL "the BSP's APIC ID is not an enabled MADT entry"
2:      cmpl $1, ncpus
        jne 3f
        PUTS "smp: single CPU, no AP to start\n"
        PASS

3:      movl ncpus, %eax
        call smp_start_aps              # EAX, EDX = AP check-ins
        PUTS "aps started="
        call print_dec
        call newline
        movl ncpus, %ecx
        call smp_check_started          # FAILs unless both are N-1
        PASS

        .data
ncpus:
        .long 0
