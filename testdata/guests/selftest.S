# selftest.S: the built-in self-test guest that `kvmm` boots when the user
# gives no kernel (builtin/build.sh assembles it into builtin/selftest.elf,
# which the kvmm binary embeds). Like every test guest it also runs under
# QEMU, its oracle (internal/guesttest: `-M q35`, which has the ACPI PM
# block it powers off with).
#
# It reports over COM1 what the VMM gave it, one section after another:
#   boot      the hvm_start_info magic and version (as hello.S);
#   memory    the PVH memory map, one line per entry, and the total RAM;
#   acpi      the RSDP (address, revision), every table listed in the XSDT
#             (or RSDT) with its signature, address, length and
#             "checksum ok" / "BAD CHECKSUM", then the DSDT and FACS that
#             the FADT points to; FACP, APIC and DSDT are required;
#   cpus      the enabled MADT Local APIC entries, INIT-SIPI-SIPI to every
#             AP (smp.inc), "cpus=N started=M";
#   poweroff  PM1a_CNT and \_S5_ (acpi_pm.inc), then "PASS selftest" and
#             the ACPI S5 power-off, exactly as s5.S does it.
# A passing run therefore ends with a power-off (status 0 under kvmm and
# QEMU). Any failure prints "FAIL selftest: <reason>" and exits through the
# debug-exit port with the FAIL code (QEMU status 35); so does a power-off
# that does not happen (bounded spin), after the PASS line.
#
# Adding a section: write a routine that prints what it finds and FAILs on
# a problem (returning means it passed), and call it from guest_main before
# power_off. Sections share what they discovered through the variables in
# .data below (fadt_addr, madt_addr, ...).

        .include "lib.inc"
        .include "smp.inc"
        .include "acpi_pm.inc"
        GUEST selftest

        .set SIG_FACP, 0x50434146       # "FACP"
        .set SIG_APIC, 0x43495041       # "APIC"
        .set SIG_DSDT, 0x54445344       # "DSDT"
        .set SIG_FACS, 0x53434146       # "FACS"
        .set FACS_MIN_LEN, 64
        .set MAX_ROOT_ENTRIES, 256      # sanity bound on the listing

        .text
        .code32
guest_main:
        PUTS "kvmm self-test\n"
        call check_boot
        call check_memory
        call check_acpi
        call check_cpus
        # New sections go here: one call each.
        call power_off                  # returns only if still running
        FAIL "still running after SLP_EN (no power-off)"

# ---------------------------------------------------------------------------
# boot: the hvm_start_info the PVH entry got in EBX.
# ---------------------------------------------------------------------------
check_boot:
        PUTS "== boot ==\n"
        call start_info_check           # FAILs on a bad magic
        ret

# ---------------------------------------------------------------------------
# memory: the PVH memory map (start info v1), as Linux's mem_map_via_hcall
# reads it.
# ---------------------------------------------------------------------------
check_memory:
        pushal
        PUTS "== memory ==\n"
        call memmap_locate              # ESI = map, ECX = entries
        testl %ecx, %ecx
        jnz 1f
        FAIL "no memory map in hvm_start_info"
1:      PUTS "memmap entries="
        movl %ecx, %eax
        call print_dec
        call newline
        movl %esi, %ebx
        movl %ecx, %edi
2:      PUTS "  addr "
        movl (%ebx), %eax
        movl 4(%ebx), %edx
        call print_hex64
        PUTS " size "
        movl 8(%ebx), %eax
        movl 12(%ebx), %edx
        call print_hex64
        PUTS " type "
        movl 16(%ebx), %eax
        call print_dec
        call print_e820_name
        call newline
        addl $MEMMAP_ENTRY_SIZE, %ebx
        decl %edi
        jnz 2b
        call memmap_total_ram           # EDX:EAX = bytes
        movl %eax, %ecx
        orl %edx, %ecx
        jnz 3f
        FAIL "no RAM in the memory map"
3:      PUTS "RAM total "
        shrdl $20, %edx, %eax           # bytes -> MiB
        call print_dec
        PUTS " MiB\n"
        popal
        ret

# print_e820_name: EAX = E820 type. Prints " (<name>)" for a known type.
print_e820_name:
        pushl %eax
        pushl %esi
        decl %eax
        cmpl $(e820_names_end - e820_names) / 4, %eax
        jae 9f
        PUTS " ("
        movl e820_names(,%eax,4), %esi
        call puts
        PUTS ")"
9:      popl %esi
        popl %eax
        ret

# ---------------------------------------------------------------------------
# acpi: the RSDP, the root table and every table it lists, checksums
# verified; FACP and APIC required; the DSDT and FACS through the FADT.
# ---------------------------------------------------------------------------
check_acpi:
        pushal
        PUTS "== acpi ==\n"
        call acpi_find_rsdp             # prints "ACPI: RSDP <addr> (how)"
        testl %eax, %eax
        jnz 1f
        FAIL "no ACPI RSDP"
1:      movl %eax, %ebx                 # EBX = RSDP
        PUTS "RSDP revision "
        movzbl 15(%ebx), %eax
        call print_dec
        PUTS " RSDT="
        movl 16(%ebx), %eax
        call print_hex32
        cmpb $2, 15(%ebx)
        jb 2f
        PUTS " XSDT="
        movl 24(%ebx), %eax
        movl 28(%ebx), %edx
        call print_hex64
2:      call newline

        movl %ebx, %eax
        call acpi_find_root             # EAX = root, EDX = entry size
        testl %eax, %eax
        jnz 3f
        FAIL "no valid RSDT/XSDT"
3:      cmpl $8, %edx
        je 4f
        # The RSDT is in use: right for ACPI 1.0, but an XSDT that a
        # revision >= 2 RSDP names must be usable.
        cmpb $2, 15(%ebx)
        jb 4f
        movl 24(%ebx), %ecx
        orl 28(%ebx), %ecx
        jz 4f
        FAIL "the RSDP's XSDT is invalid or above 4 GiB"
4:      movl %eax, %esi                 # ESI = root table
        call report_table               # its checksum is known good
        call newline

        movl %esi, %eax
        call acpi_root_entries
        movl %eax, %edi                 # EDI = entry count
        cmpl $MAX_ROOT_ENTRIES, %edi
        jbe 41f
        FAIL "the RSDT/XSDT lists more than 256 tables"
41:     xorl %ecx, %ecx                 # ECX = index
        xorl %ebp, %ebp                 # EBP = bad entries
5:      cmpl %edi, %ecx
        jae 8f
        PUTS "  "
        call acpi_root_entry            # EAX = table, CF: above 4 GiB
        jnc 6f
        PUTS "entry above 4 GiB (unreachable with paging off)\n"
        incl %ebp
        jmp 7f
6:      testl %eax, %eax
        jnz 61f
        PUTS "null entry\n"
        incl %ebp
        jmp 7f
61:     pushl %esi
        movl %eax, %esi
        call report_table               # EAX = 0 good, 1 bad
        call newline
        addl %eax, %ebp
        testl %eax, %eax
        jnz 62f
        movl (%esi), %eax               # remember the first good FACP, APIC
        cmpl $SIG_FACP, %eax
        jne 63f
        cmpl $0, fadt_addr
        jne 62f
        movl %esi, fadt_addr
        jmp 62f
63:     cmpl $SIG_APIC, %eax
        jne 62f
        cmpl $0, madt_addr
        jne 62f
        movl %esi, madt_addr
62:     popl %esi
7:      incl %ecx
        jmp 5b

8:      testl %ebp, %ebp
        jz 9f
        FAIL "ACPI table with a BAD CHECKSUM (or a bad entry) in the RSDT/XSDT"
9:      cmpl $0, fadt_addr
        jne 10f
        FAIL "no FACP (FADT) table"
10:     cmpl $0, madt_addr
        jne 11f
        FAIL "no APIC (MADT) table"

11:     # The DSDT, as the FADT names it (X_DSDT, else DSDT).
        movl fadt_addr, %ebx
        call fadt_dsdt
        testl %eax, %eax
        jnz 12f
        FAIL "the FADT has no DSDT pointer"
12:     movl %eax, %esi
        cmpl $SIG_DSDT, (%esi)
        je 13f
        FAIL "the FADT's DSDT pointer does not point to a DSDT"
13:     call report_table
        PUTS " (FADT)\n"
        testl %eax, %eax
        jz 14f
        FAIL "DSDT BAD CHECKSUM"

14:     # The FACS (X_FIRMWARE_CTRL, else FIRMWARE_CTRL). It has no checksum.
        call fadt_facs
        testl %eax, %eax
        jnz 16f
        call fadt_hw_reduced
        jnz 15f
        FAIL "the FADT has no FACS pointer"
15:     PUTS "FACS none (hardware-reduced ACPI)\n"
        jmp 19f
16:     movl %eax, %esi
        cmpl $SIG_FACS, (%esi)
        je 17f
        FAIL "the FADT's FACS pointer does not point to a FACS"
17:     PUTS "FACS "
        call print_hex32
        PUTS " len "
        movl 4(%esi), %eax
        call print_dec
        PUTS " (FADT)\n"
        cmpl $FACS_MIN_LEN, %eax
        jae 19f
        FAIL "FACS shorter than 64 bytes"
19:     popal
        ret

# report_table: ESI = table. Prints "SIG <addr> len <n>" and " checksum ok",
# " BAD CHECKSUM" or " BAD LENGTH" (no newline). EAX = 0 when good, 1 when
# bad.
report_table:
        pushl %ecx
        movl (%esi), %eax
        call print_sig
        PUTS " "
        movl %esi, %eax
        call print_hex32
        PUTS " len "
        movl 4(%esi), %ecx
        movl %ecx, %eax
        call print_dec
        cmpl $36, %ecx                  # at least a header
        jb 8f
        cmpl $0x100000, %ecx            # sanity bound, as acpi_sdt_valid
        ja 8f
        call acpi_checksum
        jne 7f
        PUTS " checksum ok"
        xorl %eax, %eax
        jmp 9f
7:      PUTS " BAD CHECKSUM"
        movl $1, %eax
        jmp 9f
8:      PUTS " BAD LENGTH"
        movl $1, %eax
9:      popl %ecx
        ret

# ---------------------------------------------------------------------------
# cpus: the MADT's enabled Local APICs; start every AP (smp.inc).
# ---------------------------------------------------------------------------
check_cpus:
        pushal
        PUTS "== cpus ==\n"
        movl madt_addr, %ebx
        call lapic_init                 # prints "MADT ... lapic=..."
        call madt_count_cpus            # EAX = N, EDX = BSP listed
        movl %eax, %edi
        PUTS "enabled Local APIC entries="
        call print_dec
        PUTS " bsp_apic_id="
        movl bsp_apic_id, %eax
        call print_dec
        call newline
        testl %edx, %edx
        jnz 1f
        FAIL "the BSP's APIC ID is not an enabled MADT entry"
1:      movl %edi, %eax
        call smp_start_aps              # EAX, EDX = AP check-ins
        PUTS "cpus="
        pushl %eax
        movl %edi, %eax
        call print_dec
        popl %eax
        PUTS " started="
        call print_dec
        call newline
        movl %edi, %ecx
        call smp_check_started          # FAILs unless started = N-1
        popal
        ret

# ---------------------------------------------------------------------------
# poweroff: the last section. Everything S5 needs is found (and FAILs)
# before the PASS line; then the ACPI S5 power-off as s5.S does it.
# ---------------------------------------------------------------------------
power_off:
        pushal
        PUTS "== poweroff ==\n"
        movl fadt_addr, %ebx
        call acpi_s5_setup              # PM1a_CNT, DSDT, \_S5_ (or FAIL)
        PUTS "ACPI S5: SLP_TYP, then SLP_TYP|SLP_EN to PM1a_CNT\n"
        call print_pass_line
        call acpi_s5_enter              # returns only if still running
        popal
        ret

        .section .rodata
e820_names:                             # E820 types 1..5
        .long e820_ram, e820_reserved, e820_acpi, e820_nvs, e820_unusable
e820_names_end:
e820_ram:
        .asciz "RAM"
e820_reserved:
        .asciz "reserved"
e820_acpi:
        .asciz "ACPI"
e820_nvs:
        .asciz "NVS"
e820_unusable:
        .asciz "unusable"

        .data
fadt_addr:                              # set by check_acpi
        .long 0
madt_addr:                              # set by check_acpi
        .long 0
