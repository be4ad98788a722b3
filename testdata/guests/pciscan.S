# pciscan.S: PCI enumeration as an OS does it at boot (Linux: pci_direct_probe,
# pci_mmcfg_early_init, pci_scan_child_bus, __pci_read_base, pci_scan_bridge),
# with every read done twice, through configuration mechanism #1 and through
# ECAM, which must agree.
#
#  * ECAM: the first allocation of the ACPI MCFG table (segment 0, base below
#    4 GiB); the base address is that of bus 0.
#  * Buses: bus 0, then the secondary bus of every bridge found, in order
#    (bus numbers as firmware programmed them; a bridge without numbers
#    FAILs). Every slot of a bus is probed (function 0; functions 1-7 only
#    when function 0's header type has the multi-function bit), an empty one
#    must read all ones through both mechanisms.
#  * Each function: the 64-byte header through CF8/CFC and ECAM must match,
#    then "pci BB:DD.F vvvv:dddd class cccccc type tt", then its BARs (6 for
#    type 0, 2 for type 1) sized as __pci_read_base does: decoding off in the
#    command register (16-bit write), write all ones, read the mask, restore
#    the BAR (both halves of a 64-bit one) and the command register; one line
#    "  barN mem32|mem64|io[ pref] <address> size <size>" per implemented BAR.
#  * Each bridge: "bridge BB:DD.F buses PP->SS..UU" and its I/O, memory and
#    prefetchable windows ("closed" when base > limit).
#  * Every assigned BAR of a function on a secondary bus must lie inside the
#    window of the bridge above it: I/O BARs in the I/O window, memory BARs in
#    the memory or the prefetchable window.
# Then "pciscan: N functions on M buses, ..." and PASS.
#
# Budget: the emulated KVM of this workplace runs ~1M guest instructions/s;
# the scan makes a few hundred configuration accesses per bus and uses
# plain integer instructions only (no BSF: sizes come from x & -x).

        .include "lib.inc"
        GUEST pciscan

        .set CONFIG_ADDRESS, 0xcf8
        .set CONFIG_DATA, 0xcfc
        .set MAX_BUSES, 16
        .set MAX_BRIDGES, 16
        .set BRIDGE_REC, 64             # bytes per bridge record (see record_bridge)
        .set BAR_REC, 32                # bytes per BAR record (see size_bars)
        .set SIG_MCFG, 0x4746434d       # "MCFG"

        .text
        .code32
guest_main:
        PUTS "pciscan: start\n"
        call find_ecam
        movl $0, busq                   # bus 0 first
        movl $1, nbus
        xorl %esi, %esi
1:      cmpl nbus, %esi
        jae 2f
        movl busq(,%esi,4), %eax
        call scan_bus
        incl %esi
        jmp 1b
2:      PUTS "pciscan: "
        movl nfuncs, %eax
        call print_dec
        PUTS " functions on "
        movl nbus, %eax
        call print_dec
        PUTS " buses, CF8/CFC and ECAM agree, bridge windows cover their BARs\n"
        PASS

# ---------------------------------------------------------------------------
# find_ecam: MCFG -> ecam_base, ecam_first, ecam_last.
# MCFG: 36-byte header, 8 reserved bytes, then 16-byte allocations
# {u64 base, u16 segment, u8 start bus, u8 end bus, u32 reserved}.
# ---------------------------------------------------------------------------
find_ecam:
        pushal
        movl $SIG_MCFG, %eax
        call acpi_find_table
        testl %eax, %eax
        jnz 1f
        FAIL "no MCFG table"
1:      movl %eax, %esi
        cmpl $60, 4(%esi)
        jae 2f
        FAIL "MCFG has no allocation"
2:      cmpl $0, 48(%esi)
        je 3f
        FAIL "ECAM above 4 GiB"
3:      cmpw $0, 52(%esi)
        je 4f
        FAIL "first MCFG allocation is not segment 0"
4:      movl 44(%esi), %eax
        movl %eax, ecam_base
        movzbl 54(%esi), %eax
        movl %eax, ecam_first
        movzbl 55(%esi), %eax
        movl %eax, ecam_last
        PUTS "ECAM "
        movl ecam_base, %eax
        call print_hex32
        PUTS " buses "
        movl ecam_first, %eax
        call print_dec
        PUTS "-"
        movl ecam_last, %eax
        call print_dec
        call newline
        popal
        ret

# ---------------------------------------------------------------------------
# Configuration access. EBX = "bdf" = bus << 16 | dev << 11 | fn << 8 (the
# CONFIG_ADDRESS layout without the enable bit), ECX = register (DWORD
# aligned for the 32-bit forms). Everything but EAX is preserved.
# ---------------------------------------------------------------------------

# cf8_select: write CONFIG_ADDRESS for EBX/ECX. Preserves all registers.
cf8_select:
        pushl %eax
        pushl %edx
        movl %ecx, %eax
        andl $0xfc, %eax
        orl %ebx, %eax
        orl $0x80000000, %eax
        movw $CONFIG_ADDRESS, %dx
        outl %eax, %dx
        popl %edx
        popl %eax
        ret

# cf8_read32: EAX = DWORD at EBX/ECX through CF8/CFC.
cf8_read32:
        pushl %edx
        call cf8_select
        movw $CONFIG_DATA, %dx
        inl %dx, %eax
        popl %edx
        ret

# cf8_write32: write EAX at EBX/ECX.
cf8_write32:
        pushl %edx
        call cf8_select
        movw $CONFIG_DATA, %dx
        outl %eax, %dx
        popl %edx
        ret

# cf8_write16: write AX at EBX/ECX (ECX may be 2 mod 4), as Linux's
# pci_conf1_write for a word: port 0xCFC + (reg & 2).
cf8_write16:
        pushl %edx
        call cf8_select
        movl %ecx, %edx
        andl $2, %edx
        addl $CONFIG_DATA, %edx
        outw %ax, %dx
        popl %edx
        ret

# ecam_read32: EAX = DWORD at EBX/ECX through ECAM. The ECAM offset is
# bus << 20 | dev << 15 | fn << 12 | reg = bdf << 4 | reg.
ecam_read32:
        movl %ebx, %eax
        shrl $16, %eax
        cmpl ecam_first, %eax
        jb 1f
        cmpl ecam_last, %eax
        ja 1f
        movl %ebx, %eax
        shll $4, %eax
        addl %ecx, %eax
        addl ecam_base, %eax
        movl (%eax), %eax
        ret
1:      FAIL "bus outside the MCFG range"

# make_bdf: EBX = bdf of cur_bus/cur_dev/cur_fn.
make_bdf:
        pushl %eax
        movl cur_bus, %ebx
        shll $16, %ebx
        movl cur_dev, %eax
        shll $11, %eax
        orl %eax, %ebx
        movl cur_fn, %eax
        shll $8, %eax
        orl %eax, %ebx
        popl %eax
        ret

# ---------------------------------------------------------------------------
# Output helpers.
# ---------------------------------------------------------------------------

# print_hexn: EAX printed as ECX hex digits (1-8), no prefix.
print_hexn:
        pushal
        movl %eax, %edx
        movl $8, %eax
        subl %ecx, %eax
        shll $2, %eax
        pushl %ecx
        movl %eax, %ecx
        roll %cl, %edx                  # skip the digits not printed
        popl %ecx
1:      roll $4, %edx
        movl %edx, %eax
        andl $0xf, %eax
        movb hex_digits(%eax), %al
        call putc
        decl %ecx
        jnz 1b
        popal
        ret

# print_bdf: "BB:DD.F" of cur_bus/cur_dev/cur_fn.
print_bdf:
        pushl %eax
        pushl %ecx
        movl $2, %ecx
        movl cur_bus, %eax
        call print_hexn
        movb $':', %al
        call putc
        movl cur_dev, %eax
        call print_hexn
        movb $'.', %al
        call putc
        movl $1, %ecx
        movl cur_fn, %eax
        call print_hexn
        popl %ecx
        popl %eax
        ret

# print_range64: EDX:EAX "-" ECX:EBX as two 0x%016x.
print_range64:
        pushal
        call print_hex64
        movb $'-', %al
        call putc
        movl %ebx, %eax
        movl %ecx, %edx
        call print_hex64
        popal
        ret

# ---------------------------------------------------------------------------
# scan_bus: EAX = bus number. Probes every slot through both mechanisms.
# ---------------------------------------------------------------------------
scan_bus:
        pushal
        movl %eax, cur_bus
        PUTS "bus "
        movl $2, %ecx
        call print_hexn
        call newline
        movl $0, cur_dev
1:      movl $0, cur_fn
2:      call make_bdf
        xorl %ecx, %ecx
        call cf8_read32
        movl %eax, %edx
        call ecam_read32
        cmpl %eax, %edx
        je 3f
        PUTS "ID of "
        call print_bdf
        PUTS ": CF8/CFC "
        movl %edx, %eax
        call print_hex32
        PUTS " ECAM "
        call print_hex32
        call newline
        FAIL "CF8/CFC and ECAM disagree on a vendor/device ID"
3:      cmpw $0xffff, %dx               # no function here
        jne 4f
        cmpl $0, cur_fn
        je 8f                           # no function 0: empty slot
        jmp 7f
4:      call scan_function
        cmpl $0, cur_fn
        jne 7f
        movl $0x0c, %ecx                # header type: byte 0x0E
        call cf8_read32
        testl $0x00800000, %eax         # multi-function bit
        jz 8f
7:      incl cur_fn
        cmpl $8, cur_fn
        jb 2b
8:      incl cur_dev
        cmpl $32, cur_dev
        jb 1b
        popal
        ret

# ---------------------------------------------------------------------------
# scan_function: the function at cur_bus/cur_dev/cur_fn exists (EBX = bdf).
# ---------------------------------------------------------------------------
scan_function:
        pushal
        incl nfuncs
        xorl %ecx, %ecx                 # the whole 64-byte header, twice
1:      call cf8_read32
        movl %eax, %edx
        call ecam_read32
        cmpl %eax, %edx
        jne 8f
        addl $4, %ecx
        cmpl $64, %ecx
        jb 1b

        PUTS "pci "
        call print_bdf
        movb $' ', %al
        call putc
        xorl %ecx, %ecx
        call cf8_read32
        movl %eax, %edx
        movl $4, %ecx
        call print_hexn                 # vendor (low half)
        movb $':', %al
        call putc
        movl %edx, %eax
        shrl $16, %eax
        call print_hexn                 # device
        PUTS " class "
        movl $0x08, %ecx
        call cf8_read32
        shrl $8, %eax
        movl $6, %ecx
        call print_hexn
        PUTS " type "
        movl $0x0c, %ecx
        call cf8_read32
        shrl $16, %eax
        andl $0x7f, %eax
        movl %eax, cur_type
        movl $2, %ecx
        call print_hexn
        call newline

        movl $6, %ecx                   # BAR registers: 6 (type 0), 2 (type 1)
        cmpl $0, cur_type
        je 2f
        movl $2, %ecx
        cmpl $1, cur_type
        je 2f
        xorl %ecx, %ecx                 # CardBus and others: not sized
2:      call size_bars
        cmpl $1, cur_type
        jne 3f
        call record_bridge
3:      cmpl $0, cur_bus
        je 4f
        call check_windows
4:      popal
        ret
8:      PUTS "header of "
        call print_bdf
        PUTS " at "
        movl %ecx, %eax
        call print_hex32
        PUTS ": CF8/CFC "
        movl %edx, %eax
        call print_hex32
        call newline
        FAIL "CF8/CFC and ECAM disagree on a header register"

# ---------------------------------------------------------------------------
# size_bars: ECX = number of BAR registers of the function at EBX. Fills
# bars[] (BAR_REC bytes each: +0 kind 1=io 2=mem, +4/+8 base lo/hi,
# +12/+16 end lo/hi) and nbars with the implemented, assigned BARs.
# ---------------------------------------------------------------------------
size_bars:
        pushal
        movl %ecx, nbarregs
        movl $0, nbars
        movl $0x04, %ecx                # decoding off while sizing
        call cf8_read32
        movl %eax, saved_cmd
        andl $0xfffc, %eax
        call cf8_write16
        xorl %esi, %esi                 # BAR register index
1:      cmpl nbarregs, %esi
        jae 9f
        leal 0x10(,%esi,4), %ecx
        call cf8_read32
        movl %eax, orig_lo
        movl $0xffffffff, %eax
        call cf8_write32
        call cf8_read32
        movl %eax, mask_lo
        movl orig_lo, %eax
        call cf8_write32
        movl $0, orig_hi
        movl $0, mask_hi
        movl $1, bar_regs
        cmpl $0, mask_lo
        je 8f                           # not implemented
        testl $1, orig_lo
        jz 2f
        # I/O BAR.
        movl $1, bar_kind
        andl $0xfffffffc, orig_lo
        andl $0xfffffffc, mask_lo
        jmp 4f
2:      movl $2, bar_kind
        movl orig_lo, %eax
        andl $6, %eax
        cmpl $4, %eax                   # type 10b: 64-bit
        jne 3f
        incl %esi
        cmpl nbarregs, %esi
        jb 21f
        FAIL "64-bit BAR in the last BAR register"
21:     movl $2, bar_regs
        addl $4, %ecx
        call cf8_read32
        movl %eax, orig_hi
        movl $0xffffffff, %eax
        call cf8_write32
        call cf8_read32
        movl %eax, mask_hi
        movl orig_hi, %eax
        call cf8_write32
        decl %esi
        jmp 31f
3:      movl $0xffffffff, mask_hi       # a 32-bit BAR is below 4 GiB
31:     movl orig_lo, %eax
        movl %eax, bar_flags
        andl $0xfffffff0, orig_lo
        andl $0xfffffff0, mask_lo
4:      # size = lowest set bit of the 64-bit mask (x & -x)
        movl mask_lo, %eax
        testl %eax, %eax
        jz 5f
        movl %eax, %edx
        negl %edx
        andl %edx, %eax
        movl %eax, size_lo
        movl $0, size_hi
        jmp 6f
5:      movl mask_hi, %eax
        movl %eax, %edx
        negl %edx
        andl %edx, %eax
        movl %eax, size_hi
        movl $0, size_lo

6:      PUTS "  bar"
        movl %esi, %eax
        call print_dec
        cmpl $1, bar_kind
        jne 61f
        PUTS " io "
        jmp 63f
61:     cmpl $2, bar_regs
        je 62f
        PUTS " mem32 "
        jmp 64f
62:     PUTS " mem64 "
64:     testl $8, bar_flags
        jz 63f
        PUTS "pref "
63:     movl orig_lo, %eax
        movl orig_hi, %edx
        call print_hex64
        PUTS " size "
        movl size_lo, %eax
        movl size_hi, %edx
        call print_hex64
        movl orig_lo, %eax
        orl orig_hi, %eax
        jnz 7f
        PUTS " unassigned\n"
        jmp 8f
7:      call newline
        # Record it: end = base + size - 1.
        movl nbars, %edi
        shll $5, %edi
        addl $bars, %edi
        movl bar_kind, %eax
        movl %eax, (%edi)
        movl orig_lo, %eax
        movl orig_hi, %edx
        movl %eax, 4(%edi)
        movl %edx, 8(%edi)
        addl size_lo, %eax
        adcl size_hi, %edx
        subl $1, %eax
        sbbl $0, %edx
        movl %eax, 12(%edi)
        movl %edx, 16(%edi)
        incl nbars
8:      addl bar_regs, %esi
        jmp 1b
9:      movl saved_cmd, %eax
        movl $0x04, %ecx
        call cf8_write16
        popal
        ret

# ---------------------------------------------------------------------------
# record_bridge: the type 1 function at EBX. Appends its record to bridges[]
# (+0 secondary, +4 subordinate, then three windows of {base lo, base hi,
# limit lo, limit hi}: I/O at +8, memory at +24, prefetchable at +40),
# prints it and queues its secondary bus.
# ---------------------------------------------------------------------------
record_bridge:
        pushal
        cmpl $MAX_BRIDGES, nbridges
        jb 1f
        FAIL "too many bridges"
1:      movl nbridges, %edi
        shll $6, %edi
        addl $bridges, %edi
        movl $0x18, %ecx                # primary, secondary, subordinate
        call cf8_read32
        movl %eax, %edx
        movzbl %ah, %eax
        movl %eax, (%edi)
        movl %edx, %eax
        shrl $16, %eax
        andl $0xff, %eax
        movl %eax, 4(%edi)
        movl %edx, bus_regs

        movl $0x1c, %ecx                # I/O base/limit (4 KiB units)
        call cf8_read32
        movl %eax, %edx
        andl $0xf0, %eax
        shll $8, %eax
        movl %eax, 8(%edi)
        movl %edx, %eax
        andl $0xf000, %eax
        orl $0xfff, %eax
        movl %eax, 16(%edi)
        movl $0, 12(%edi)
        movl $0, 20(%edi)
        andl $0x0f, %edx
        cmpl $1, %edx                   # 32-bit I/O decoding: upper halves
        jne 2f
        movl $0x30, %ecx
        call cf8_read32
        movl %eax, %edx
        shll $16, %eax
        orl %eax, 8(%edi)
        andl $0xffff0000, %edx
        orl %edx, 16(%edi)

2:      movl $0x20, %ecx                # memory base/limit (1 MiB units)
        call cf8_read32
        movl %eax, %edx
        andl $0xfff0, %eax
        shll $16, %eax
        movl %eax, 24(%edi)
        andl $0xfff00000, %edx
        orl $0xfffff, %edx
        movl %edx, 32(%edi)
        movl $0, 28(%edi)
        movl $0, 36(%edi)

        movl $0x24, %ecx                # prefetchable base/limit
        call cf8_read32
        movl %eax, %edx
        andl $0xfff0, %eax
        shll $16, %eax
        movl %eax, 40(%edi)
        movl %edx, %eax
        andl $0xfff00000, %eax
        orl $0xfffff, %eax
        movl %eax, 48(%edi)
        movl $0, 44(%edi)
        movl $0, 52(%edi)
        andl $0x0f, %edx
        cmpl $1, %edx                   # 64-bit window: upper halves
        jne 3f
        movl $0x28, %ecx
        call cf8_read32
        movl %eax, 44(%edi)
        movl $0x2c, %ecx
        call cf8_read32
        movl %eax, 52(%edi)

3:      PUTS "bridge "
        call print_bdf
        PUTS " buses "
        movl $2, %ecx
        movl bus_regs, %eax
        call print_hexn
        PUTS "->"
        movl (%edi), %eax
        call print_hexn
        PUTS ".."
        movl 4(%edi), %eax
        call print_hexn
        call newline
        PUTS "  io window "
        leal 8(%edi), %esi
        call print_window
        PUTS "  mem window "
        leal 24(%edi), %esi
        call print_window
        PUTS "  pref window "
        leal 40(%edi), %esi
        call print_window
        incl nbridges

        # Queue the secondary bus. It must be numbered above this one.
        movl (%edi), %eax
        cmpl cur_bus, %eax
        ja 4f
        FAIL "bridge without bus numbers above its own bus"
4:      cmpl $MAX_BUSES, nbus
        jb 5f
        FAIL "too many buses"
5:      movl nbus, %ecx
        movl %eax, busq(,%ecx,4)
        incl nbus
        popal
        ret

# print_window: ESI = {base lo, base hi, limit lo, limit hi}.
print_window:
        pushal
        movl (%esi), %eax
        movl 4(%esi), %edx
        movl 8(%esi), %ebx
        movl 12(%esi), %ecx
        call print_range64
        pushl %eax
        call le64                       # base <= limit?
        testl %eax, %eax
        popl %eax
        jnz 1f
        PUTS " closed"
1:      call newline
        popal
        ret

# le64: EAX = 1 when EDX:EAX <= ECX:EBX (unsigned), else 0.
le64:
        cmpl %ecx, %edx
        jb 1f
        ja 2f
        cmpl %ebx, %eax
        jbe 1f
2:      xorl %eax, %eax
        ret
1:      movl $1, %eax
        ret

# window_contains: ESI = window {base, limit} (64-bit each), EDI = BAR record.
# EAX = 1 when base <= BAR start and BAR end <= limit.
window_contains:
        pushl %ebx
        pushl %ecx
        pushl %edx
        movl (%esi), %eax
        movl 4(%esi), %edx
        movl 4(%edi), %ebx
        movl 8(%edi), %ecx
        call le64
        testl %eax, %eax
        jz 1f
        movl 12(%edi), %eax
        movl 16(%edi), %edx
        movl 8(%esi), %ebx
        movl 12(%esi), %ecx
        call le64
1:      popl %edx
        popl %ecx
        popl %ebx
        ret

# ---------------------------------------------------------------------------
# check_windows: every BAR in bars[] of the function on cur_bus (> 0) lies in
# a window of the bridge whose secondary bus is cur_bus.
# ---------------------------------------------------------------------------
check_windows:
        pushal
        xorl %ecx, %ecx
        movl $bridges, %ebx
1:      cmpl nbridges, %ecx
        jb 2f
        FAIL "no bridge found for a secondary bus"
2:      movl cur_bus, %eax
        cmpl %eax, (%ebx)
        je 3f
        incl %ecx
        addl $BRIDGE_REC, %ebx
        jmp 1b
3:      xorl %ecx, %ecx                 # BAR index
        movl $bars, %edi
4:      cmpl nbars, %ecx
        jae 9f
        cmpl $1, (%edi)
        jne 5f
        leal 8(%ebx), %esi              # I/O BAR: the I/O window
        call window_contains
        testl %eax, %eax
        jnz 6f
        FAIL "I/O BAR outside the bridge's I/O window"
5:      leal 24(%ebx), %esi             # memory BAR: memory or prefetchable
        call window_contains
        testl %eax, %eax
        jnz 6f
        leal 40(%ebx), %esi
        call window_contains
        testl %eax, %eax
        jnz 6f
        FAIL "memory BAR outside the bridge's memory windows"
6:      incl %ecx
        addl $BAR_REC, %edi
        jmp 4b
9:      cmpl $0, nbars
        je 10f
        PUTS "  BARs inside the windows of the bridge to bus "
        movl cur_bus, %eax
        movl $2, %ecx
        call print_hexn
        call newline
10:     popal
        ret

# ---------------------------------------------------------------------------
        .data
        .balign 4
ecam_base:      .long 0
ecam_first:     .long 0
ecam_last:      .long 0
nbus:           .long 0
busq:           .fill MAX_BUSES, 4, 0
nfuncs:         .long 0
nbridges:       .long 0
cur_bus:        .long 0
cur_dev:        .long 0
cur_fn:         .long 0
cur_type:       .long 0
bus_regs:       .long 0
nbarregs:       .long 0
nbars:          .long 0
saved_cmd:      .long 0
orig_lo:        .long 0
orig_hi:        .long 0
mask_lo:        .long 0
mask_hi:        .long 0
size_lo:        .long 0
size_hi:        .long 0
bar_kind:       .long 0
bar_regs:       .long 0
bar_flags:      .long 0
        .balign 32
bars:           .fill 6 * BAR_REC, 1, 0
bridges:        .fill MAX_BRIDGES * BRIDGE_REC, 1, 0
