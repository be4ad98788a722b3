# hello.S: the smallest useful guest and the start-up benchmark.
#
# Mirrors the first things Linux's PVH path does (xen_prepare_pvh and
# mem_map_via_hcall in arch/x86/platform/pvh/enlighten.c): check the
# hvm_start_info magic, then read the memory map from it. Prints the entry
# count and the total RAM, then PASSes at once.
#
# Command line: "hello.fail" makes it FAIL on purpose (to exercise a VMM's
# failure path).

        .include "lib.inc"
        GUEST hello

        .text
        .code32
guest_main:
        PUTS "hello from the test guest\n"
        call start_info_check           # FAILs on a bad magic

        call memmap_locate              # ESI = map, ECX = entries (0: none)
        jecxz 5f
        PUTS "memmap entries="
        movl %ecx, %eax
        call print_dec
        call memmap_total_ram           # EDX:EAX = total E820_RAM bytes
        PUTS " ram="
        call print_hex64
        PUTS " ("
        shrdl $20, %edx, %eax           # bytes -> MiB
        call print_dec
        PUTS " MiB)\n"

5:      movl $opt_fail, %esi
        call cmdline_has
        testl %eax, %eax
        jz 8f
        FAIL "requested by the command line (hello.fail)"
8:      PASS

        .section .rodata
opt_fail:
        .asciz "hello.fail"
