# virtioblk.S: virtio-blk over the modern virtio-pci transport, driven the
# way Linux's virtio_pci_modern and virtio_blk drivers do it, with polling
# instead of interrupt handlers (this host's emulator cannot IRET).
#
#  * Paging first: long mode's 4-level tables, but the code stays 32-bit
#    (compatibility mode: this host's emulator runs it, while legacy PAE
#    paging fails here), 0-1 GiB and 3-4 GiB identity-mapped (2 MiB pages,
#    the top GiB uncached for the local APIC), and every BAR the driver
#    needs mapped into 1-2 GiB, so a 64-bit BAR above 4 GiB (where kvmm puts
#    it) is reachable from 32-bit code as well as one below (SeaBIOS).
#  * PCI: bus 0 and every bridge's secondary bus through CF8/CFC; every
#    1af4:1042 function is a disk, tested in the order found.
#  * Per disk, as pci_enable_device + pci_set_master + vp_modern_probe: memory
#    decoding and bus mastering on; the capability list (common, notify with
#    its multiplier, ISR, device, PCI configuration access, MSI-X); the BARs
#    mapped; num_queues read through the PCI configuration access capability
#    must equal the one read through the BAR.
#  * Negotiation: reset (status 0, read back until 0), ACKNOWLEDGE, DRIVER,
#    driver features with bit 63 (never offered) and FEATURES_OK: the device
#    may refuse (kvmm does; `virtioblk.strict` on the command line makes an
#    accepted one FAIL; QEMU masks the bit and accepts). Then again as
#    virtio_blk: reset, ACKNOWLEDGE, DRIVER, VERSION_1 plus the offered ones
#    of SEG_MAX, RO, BLK_SIZE, FLUSH, INDIRECT_DESC, EVENT_IDX; FEATURES_OK
#    must stick.
#  * Interrupts: disks 0, 2: MSI-X (table entries for config = vector 0 and
#    queue 0 = vector 1, MSI-X enabled, then config_msix_vector and
#    queue_msix_vector, read back); disks 1, 3: INTx (NO_VECTOR).
#  * Queue 0: 16 entries, rings in low RAM, addresses written as two
#    32-bit halves, queue_enable, DRIVER_OK; capacity from the device
#    configuration.
#  * Requests (one at a time: header, data, status; through an indirect
#    table when INDIRECT_DESC is negotiated; used_event kept at the last
#    used index as virtqueue_enable_cb does; a 16-bit write of the queue
#    index to its notification address; the used ring polled): GET_ID
#    (printed), IN sector 1 (must hold byte i = i*7 + 13, what the host
#    test wrote), OUT sector 2 (byte i = i*3 + 0x5A + disk index; a
#    read-only disk must answer IOERR), FLUSH, IN sector 2 (must read back).
#    After a request: MSI-X disks find the queue vector pending in the local
#    APIC's IRR (interrupts stay disabled); INTx disks find the PCI status
#    interrupt bit set, the ISR's queue bit set, and the status bit clear
#    after the ISR read.
#  * Reset (status 0) and a full set-up again, then sector 1 again: what
#    Linux does on every resume from S3.
#  * A head index past the queue (16 of 16) made available: the device must
#    set DEVICE_NEEDS_RESET and the ISR's configuration bit; a reset and set-
#    up bring it back (sector 1 read again).
# Then "virtioblk: N disks passed" and PASS.

        .include "lib.inc"
        GUEST virtioblk

        .set CONFIG_ADDRESS, 0xcf8
        .set CONFIG_DATA, 0xcfc
        .set MAX_BUSES, 8
        .set MAX_DISKS, 4
        .set POLL_BUDGET, 5000000        # ~5-20 s of emulated polling

        # Page tables (4-level) and the BAR window.
        .set PML4, 0x200000
        .set PDPT, 0x201000
        .set PD0, 0x202000
        .set PD1, 0x203000
        .set PD3, 0x204000
        .set MSR_EFER, 0xc0000080
        .set EFER_LME, 0x100
        .set BAR_WINDOW, 0x40000000
        .set PDE_RAM, 0x83               # present, writable, 2 MiB
        .set PDE_MMIO, 0x9b              # present, writable, PWT, PCD, 2 MiB
        .set LAPIC, 0xfee00000

        # Per-disk DMA area: 64 KiB from DMA_BASE.
        .set DMA_BASE, 0x400000
        .set D_DESC, 0x0000              # descriptor table, 16 entries
        .set D_AVAIL, 0x0100             # flags, idx, ring[16], used_event
        .set D_USED, 0x0200              # flags, idx, ring[16], avail_event
        .set D_IND, 0x0400               # indirect table
        .set D_HDR, 0x0500               # struct virtio_blk_outhdr
        .set D_STATUS, 0x0600
        .set D_ID, 0x0700                # GET_ID answer (20 bytes + NUL)
        .set D_DATA, 0x1000              # 512-byte read buffer
        .set D_WDATA, 0x2000             # 512-byte write buffer
        .set QSIZE, 16

        # struct virtio_pci_common_cfg.
        .set C_DFSELECT, 0x00
        .set C_DF, 0x04
        .set C_GFSELECT, 0x08
        .set C_GF, 0x0c
        .set C_MSIX, 0x10
        .set C_NUMQ, 0x12
        .set C_STATUS, 0x14
        .set C_QSELECT, 0x16
        .set C_QSIZE, 0x18
        .set C_QMSIX, 0x1a
        .set C_QENABLE, 0x1c
        .set C_QNOFF, 0x1e
        .set C_QDESC, 0x20
        .set C_QDRIVER, 0x28
        .set C_QDEVICE, 0x30

        .set S_ACK, 1
        .set S_DRIVER, 2
        .set S_DRIVER_OK, 4
        .set S_FEATURES_OK, 8
        .set S_NEEDS_RESET, 0x40

        .set F_SEG_MAX, 1 << 2
        .set F_RO, 1 << 5
        .set F_BLK_SIZE, 1 << 6
        .set F_FLUSH, 1 << 9
        .set F_INDIRECT, 1 << 28
        .set F_EVENT_IDX, 1 << 29
        .set WANT_LO, F_SEG_MAX | F_RO | F_BLK_SIZE | F_FLUSH | F_INDIRECT | F_EVENT_IDX

        .set DESC_NEXT, 1
        .set DESC_WRITE, 2
        .set DESC_INDIRECT, 4

        .set T_IN, 0
        .set T_OUT, 1
        .set T_FLUSH, 4
        .set T_GET_ID, 8

        .text
        .code32
guest_main:
        PUTS "virtioblk: start\n"
        movl $opt_strict, %esi
        call cmdline_has
        movl %eax, strict
        call paging_init
        call lapic_enable
        call find_disks
        cmpl $0, ndisks
        jne 1f
        FAIL "no virtio-blk function (1af4:1042) found"
1:      xorl %esi, %esi
2:      cmpl ndisks, %esi
        jae 3f
        movl %esi, disk
        movl disks(,%esi,4), %ebx
        call disk_test
        incl %esi
        jmp 2b
3:      PUTS "virtioblk: "
        movl ndisks, %eax
        call print_dec
        PUTS " disks passed\n"
        PASS

# ---------------------------------------------------------------------------
# paging_init: IA-32e paging with 2 MiB pages, entered from 32-bit code
# without a far jump to a 64-bit segment, so the CPU runs on in
# compatibility mode: linear addresses stay 32-bit, physical ones may be
# anywhere. PD0 maps 0-1 GiB, PD3 3-4 GiB (uncached), PD1 (1-2 GiB) is
# filled by map_bar.
# ---------------------------------------------------------------------------
paging_init:
        pushal
        movl $PML4, %edi                 # PML4, PDPT, PD0, PD1, PD3: 5 pages
        movl $(5 * 1024), %ecx
        xorl %eax, %eax
        cld
        rep stosl
        movl $(PDPT | 3), PML4
        movl $(PD0 | 3), PDPT
        movl $(PD1 | 3), PDPT + 8
        movl $(PD3 | 3), PDPT + 24
        xorl %ecx, %ecx
1:      movl %ecx, %eax
        shll $21, %eax
        orl $PDE_RAM, %eax
        movl %eax, PD0(,%ecx,8)
        movl %ecx, %eax
        shll $21, %eax
        addl $0xc0000000, %eax
        orl $PDE_MMIO, %eax
        movl %eax, PD3(,%ecx,8)
        incl %ecx
        cmpl $512, %ecx
        jb 1b
        movl %cr4, %eax
        orl $0x20, %eax                  # CR4.PAE
        movl %eax, %cr4
        movl $PML4, %eax
        movl %eax, %cr3
        movl $MSR_EFER, %ecx
        rdmsr
        orl $EFER_LME, %eax
        wrmsr
        movl %cr0, %eax
        orl $0x80000000, %eax            # CR0.PG: IA-32e, compatibility mode
        movl %eax, %cr0
        jmp 2f
2:      PUTS "virtioblk: paging on (compatibility mode), BARs mapped from 0x40000000\n"
        popal
        ret

# lapic_enable: SVR bit 8 (APIC software enable), so MSIs reach the IRR.
lapic_enable:
        pushl %eax
        movl LAPIC + 0xf0, %eax
        orl $0x100, %eax
        movl %eax, LAPIC + 0xf0
        popl %eax
        ret

# ---------------------------------------------------------------------------
# find_disks: bus 0, then each bridge's secondary bus; disks[] = bdf of every
# 1af4:1042 function.
# ---------------------------------------------------------------------------
find_disks:
        pushal
        movl $0, busq
        movl $1, nbus
        xorl %esi, %esi
1:      cmpl nbus, %esi
        jae 9f
        movl busq(,%esi,4), %eax
        movl %eax, cur_bus
        movl $0, cur_dev
2:      movl $0, cur_fn
3:      call make_bdf
        xorl %ecx, %ecx
        call cf8_read32
        cmpw $0xffff, %ax
        jne 4f
        cmpl $0, cur_fn
        je 7f                            # no function 0: empty slot
        jmp 6f
4:      cmpl $0x10421af4, %eax
        jne 5f
        movl ndisks, %edx
        cmpl $MAX_DISKS, %edx
        jae 5f
        movl %ebx, disks(,%edx,4)
        incl ndisks
5:      movl $0x0c, %ecx
        call cf8_read32
        movl %eax, %edx                  # header type in bits 23:16
        shrl $16, %eax
        andl $0x7f, %eax
        cmpl $1, %eax
        jne 51f
        movl $0x18, %ecx                 # a bridge: queue its secondary bus
        call cf8_read32
        movzbl %ah, %eax
        testl %eax, %eax
        jz 51f
        movl nbus, %ecx
        cmpl $MAX_BUSES, %ecx
        jae 51f
        movl %eax, busq(,%ecx,4)
        incl nbus
51:     cmpl $0, cur_fn
        jne 6f
        testl $0x00800000, %edx          # multi-function
        jz 7f
6:      incl cur_fn
        cmpl $8, cur_fn
        jb 3b
7:      incl cur_dev
        cmpl $32, cur_dev
        jb 2b
        incl %esi
        jmp 1b
9:      popal
        ret

# ---------------------------------------------------------------------------
# disk_test: the whole sequence for the disk at EBX (bdf); `disk` is its index.
# ---------------------------------------------------------------------------
disk_test:
        pushal
        movl %ebx, cur_bdf
        movl %ebx, %eax
        shrl $16, %eax
        movl %eax, cur_bus
        movl %ebx, %eax
        shrl $11, %eax
        andl $0x1f, %eax
        movl %eax, cur_dev
        movl %ebx, %eax
        shrl $8, %eax
        andl $7, %eax
        movl %eax, cur_fn
        PUTS "virtio-blk "
        call print_bdf
        movl disk, %eax
        movl %eax, %ecx
        shll $16, %eax
        addl $DMA_BASE, %eax
        movl %eax, dma
        leal 0x40(,%ecx,2), %eax         # LAPIC vectors: 0x40 + 2n (config), +1 (queue)
        movl %eax, vec_cfg
        incl %eax
        movl %eax, vec_q
        movl $0, irq_seen
        xorl %eax, %eax
        testl $1, %ecx
        jnz 1f
        incl %eax
1:      movl %eax, use_msix
        movl $bar_lin, %edi
        movl $6, %ecx
        xorl %eax, %eax
        rep stosl
        cmpl $0, use_msix
        je 2f
        PUTS " (MSI-X)\n"
        jmp 3f
2:      PUTS " (INTx)\n"
3:      movl cur_bdf, %ebx               # pci_enable_device + pci_set_master
        movl $0x04, %ecx
        call cf8_read32
        orl $0x06, %eax
        call cf8_write16
        call parse_caps
        call map_regions
        call check_pcicfg
        call negotiate_unoffered
        movl $1, verbose
        call device_setup
        movl $0, verbose
        call run_requests
        call device_setup                # reset and everything again (S3 resume)
        movl $1, %edx
        call read_check
        PUTS "  reset (status 0) and set up again: sector 1 ok\n"
        call bogus_head
        movl common, %edi                # leave the disk reset
        movb $0, C_STATUS(%edi)
        popal
        ret

# ---------------------------------------------------------------------------
# parse_caps: walk the capability list: the first virtio capability of each
# cfg_type (as virtio_pci_find_capability), the notify multiplier, the PCI
# configuration access capability, MSI-X.
# ---------------------------------------------------------------------------
parse_caps:
        pushal
        movl $0, cap_seen
        movl $0, msix_cap
        movl cur_bdf, %ebx
        movl $0x34, %ecx
        call cf8_read32
        movzbl %al, %esi
        movl $48, %edi                   # bound: a looping list
1:      andl $0xfc, %esi
        jz 9f
        decl %edi
        jnz 2f
        FAIL "capability list loops"
2:      movl %esi, %ecx
        call cf8_read32
        movl %eax, %edx                  # id, next, cap_len, cfg_type
        cmpb $0x11, %al
        jne 3f
        movl %esi, msix_cap
        jmp 8f
3:      cmpb $0x09, %al
        jne 8f
        shrl $24, %eax                   # cfg_type
        cmpl $7, %eax
        ja 8f
        movl %eax, %ebp
        movl %eax, %ecx
        movl $1, %eax
        shll %cl, %eax
        testl %eax, cap_seen
        jnz 8f                           # not the first of its type
        orl %eax, cap_seen
        leal 4(%esi), %ecx
        call cf8_read32
        andl $0xff, %eax
        movl %eax, cap_bar(,%ebp,4)
        leal 8(%esi), %ecx
        call cf8_read32
        movl %eax, cap_off(,%ebp,4)
        leal 12(%esi), %ecx
        call cf8_read32
        movl %eax, cap_len(,%ebp,4)
        cmpl $2, %ebp
        jne 4f
        leal 16(%esi), %ecx
        call cf8_read32
        movl %eax, notify_mult
4:      cmpl $5, %ebp
        jne 8f
        movl %esi, pcicfg_cap
8:      movl %edx, %eax
        movzbl %ah, %esi
        jmp 1b
9:      movl cap_seen, %eax
        andl $0x3e, %eax
        cmpl $0x3e, %eax
        je 10f
        PUTS "  virtio capabilities found (bit = cfg_type): "
        movl cap_seen, %eax
        call print_hex32
        call newline
        FAIL "missing a virtio capability (common, notify, ISR, device, PCI cfg)"
10:     PUTS "  caps: common bar "
        movl cap_bar + 4, %eax
        call print_dec
        PUTS "+"
        movl cap_off + 4, %eax
        call print_hex32
        PUTS ", notify +"
        movl cap_off + 8, %eax
        call print_hex32
        PUTS " x"
        movl notify_mult, %eax
        call print_dec
        PUTS ", isr +"
        movl cap_off + 12, %eax
        call print_hex32
        PUTS ", device +"
        movl cap_off + 16, %eax
        call print_hex32
        PUTS " len "
        movl cap_len + 16, %eax
        call print_dec
        PUTS ", msix "
        movl msix_cap, %eax
        testl %eax, %eax
        jnz 11f
        PUTS "none\n"
        jmp 12f
11:     call print_hex32
        call newline
12:     cmpl $0, use_msix
        je 13f
        cmpl $0, msix_cap
        jne 13f
        FAIL "no MSI-X capability"
13:     popal
        ret

# ---------------------------------------------------------------------------
# map_bar: EAX = BAR index. EAX = linear address of the BAR, mapping its
# 2 MiB page into the window the first time (BARs are naturally aligned and
# at most 16 KiB here, so one page holds a BAR).
# ---------------------------------------------------------------------------
map_bar:
        pushl %ebx
        pushl %ecx
        pushl %edx
        pushl %esi
        cmpl $5, %eax
        jbe 1f
        FAIL "capability names a BAR past 5"
1:      movl %eax, %esi
        movl bar_lin(,%esi,4), %eax
        testl %eax, %eax
        jnz 9f
        movl cur_bdf, %ebx
        leal 0x10(,%esi,4), %ecx
        call cf8_read32
        testl $1, %eax
        jz 2f
        FAIL "virtio registers in an I/O BAR"
2:      movl %eax, %edx                  # EDX = low dword
        xorl %ebx, %ebx                  # EBX = high dword
        andl $6, %eax
        cmpl $4, %eax
        jne 3f
        pushl %ebx
        movl cur_bdf, %ebx
        addl $4, %ecx
        call cf8_read32
        popl %ebx
        movl %eax, %ebx
3:      andl $0xfffffff0, %edx
        movl %edx, %eax
        orl %ebx, %eax
        jnz 4f
        FAIL "BAR unassigned"
4:      PUTS "  BAR"
        movl %esi, %eax
        call print_dec
        PUTS " at "
        movl %edx, %eax
        pushl %edx
        movl %ebx, %edx
        call print_hex64
        popl %edx
        movl nslots, %ecx
        cmpl $512, %ecx
        jb 5f
        FAIL "out of BAR window slots"
5:      incl nslots
        movl %edx, %eax
        andl $0xffe00000, %eax
        orl $PDE_MMIO, %eax
        movl %eax, PD1(,%ecx,8)
        movl %ebx, PD1 + 4(,%ecx,8)
        movl %cr3, %eax                  # flush the TLB
        movl %eax, %cr3
        shll $21, %ecx
        andl $0x1fffff, %edx
        leal BAR_WINDOW(%ecx,%edx), %eax
        movl %eax, bar_lin(,%esi,4)
        PUTS ", mapped at "
        call print_hex32
        call newline
9:      popl %esi
        popl %edx
        popl %ecx
        popl %ebx
        ret

# map_regions: linear addresses of the common, notify, ISR and device
# regions and of the MSI-X table.
map_regions:
        pushal
        movl $1, %esi
        movl $common, %edi
1:      movl cap_bar(,%esi,4), %eax
        call map_bar
        addl cap_off(,%esi,4), %eax
        movl %eax, (%edi)
        addl $4, %edi
        incl %esi
        cmpl $5, %esi
        jb 1b
        cmpl $0, msix_cap
        je 9f
        movl cur_bdf, %ebx
        movl msix_cap, %ecx
        addl $4, %ecx
        call cf8_read32                  # table offset | BIR
        movl %eax, %edx
        andl $7, %eax
        call map_bar
        andl $0xfffffff8, %edx
        addl %edx, %eax
        movl %eax, msix_table
9:      popal
        ret

# check_pcicfg: num_queues through the PCI configuration access capability
# (bar, offset, length, then pci_cfg_data) equals num_queues through the BAR.
check_pcicfg:
        pushal
        movl cur_bdf, %ebx
        movl pcicfg_cap, %esi
        leal 4(%esi), %ecx
        movl cap_bar + 4, %eax
        call cf8_write32
        leal 8(%esi), %ecx
        movl cap_off + 4, %eax
        addl $C_NUMQ, %eax
        call cf8_write32
        leal 12(%esi), %ecx
        movl $2, %eax
        call cf8_write32
        leal 16(%esi), %ecx
        call cf8_read32
        movzwl %ax, %edx
        movl common, %edi
        movzwl C_NUMQ(%edi), %eax
        cmpl %eax, %edx
        je 1f
        PUTS "  num_queues: BAR "
        call print_dec
        PUTS ", PCI cfg capability "
        movl %edx, %eax
        call print_dec
        call newline
        FAIL "the PCI configuration access capability disagrees with the BAR"
1:      PUTS "  num_queues "
        call print_dec
        PUTS " through the BAR and the PCI cfg capability\n"
        popal
        ret

# ---------------------------------------------------------------------------
# Status and features.
# ---------------------------------------------------------------------------

# device_reset: status 0, then wait for it to read 0 (vp_modern_set_status +
# vp_reset's wait).
device_reset:
        pushl %ecx
        pushl %edi
        movl common, %edi
        movb $0, C_STATUS(%edi)
        movl $100000, %ecx
1:      cmpb $0, C_STATUS(%edi)
        je 2f
        decl %ecx
        jnz 1b
        FAIL "device_status does not read 0 after a reset"
2:      popl %edi
        popl %ecx
        ret

# set_status: OR AL into device_status.
set_status:
        pushl %edi
        movl common, %edi
        orb C_STATUS(%edi), %al
        movb %al, C_STATUS(%edi)
        popl %edi
        ret

# read_features: feat_lo/feat_hi = device_feature words 0 and 1.
read_features:
        pushl %eax
        pushl %edi
        movl common, %edi
        movl $0, C_DFSELECT(%edi)
        movl C_DF(%edi), %eax
        movl %eax, feat_lo
        movl $1, C_DFSELECT(%edi)
        movl C_DF(%edi), %eax
        movl %eax, feat_hi
        popl %edi
        popl %eax
        ret

# write_features: driver_feature words 0 and 1 = drv_lo/drv_hi.
write_features:
        pushl %eax
        pushl %edi
        movl common, %edi
        movl $0, C_GFSELECT(%edi)
        movl drv_lo, %eax
        movl %eax, C_GF(%edi)
        movl $1, C_GFSELECT(%edi)
        movl drv_hi, %eax
        movl %eax, C_GF(%edi)
        popl %edi
        popl %eax
        ret

# negotiate_unoffered: accept feature 63, which no device offers, and see
# whether FEATURES_OK sticks.
negotiate_unoffered:
        pushal
        call device_reset
        movb $S_ACK, %al
        call set_status
        movb $S_DRIVER, %al
        call set_status
        call read_features
        movl $0, drv_lo
        movl $0x80000001, drv_hi         # VERSION_1 | bit 63
        call write_features
        movb $S_FEATURES_OK, %al
        call set_status
        movl common, %edi
        testb $S_FEATURES_OK, C_STATUS(%edi)
        jnz 1f
        PUTS "  unoffered feature bit 63: FEATURES_OK refused\n"
        jmp 2f
1:      PUTS "  unoffered feature bit 63: FEATURES_OK accepted\n"
        cmpl $0, strict
        je 2f
        FAIL "FEATURES_OK accepted with a feature the device did not offer"
2:      popal
        ret

# ---------------------------------------------------------------------------
# device_setup: reset and initialise as virtio_dev_probe + virtblk_probe:
# negotiate, vectors, queue 0, DRIVER_OK. Prints details when `verbose`.
# ---------------------------------------------------------------------------
device_setup:
        pushal
        call device_reset
        movb $S_ACK, %al
        call set_status
        movb $S_DRIVER, %al
        call set_status
        call read_features
        testl $1, feat_hi
        jnz 1f
        FAIL "the device does not offer VIRTIO_F_VERSION_1"
1:      movl feat_lo, %eax
        andl $WANT_LO, %eax
        movl %eax, drv_lo
        movl $1, drv_hi
        call write_features
        movb $S_FEATURES_OK, %al
        call set_status
        movl common, %edi
        testb $S_FEATURES_OK, C_STATUS(%edi)
        jnz 2f
        FAIL "FEATURES_OK refused for offered features"
2:      movl drv_lo, %eax
        movl %eax, %edx
        andl $F_INDIRECT, %edx
        movl %edx, use_indirect
        movl %eax, %edx
        andl $F_EVENT_IDX, %edx
        movl %edx, use_event
        andl $F_RO, %eax
        movl %eax, ro
        cmpl $0, verbose
        je 3f
        PUTS "  device features "
        movl feat_lo, %eax
        movl feat_hi, %edx
        call print_hex64
        PUTS ", driver features "
        movl drv_lo, %eax
        movl drv_hi, %edx
        call print_hex64
        call newline
3:      cmpl $0, use_msix
        je 5f
        call msix_setup
        movw $0, C_MSIX(%edi)            # config vector 0
        cmpw $0, C_MSIX(%edi)
        je 5f
        FAIL "config_msix_vector 0 refused"
5:      movw $0, C_QSELECT(%edi)
        movzwl C_QSIZE(%edi), %eax
        cmpl $QSIZE, %eax
        jae 6f
        FAIL "queue 0 is smaller than 16 entries"
6:      cmpl $0, verbose
        je 7f
        PUTS "  queue 0: max size "
        call print_dec
7:      movw $QSIZE, C_QSIZE(%edi)
        movzwl C_QMSIX(%edi), %eax
        cmpl $0, use_msix
        je 8f
        movw $1, C_QMSIX(%edi)           # queue 0 -> vector 1
        cmpw $1, C_QMSIX(%edi)
        je 9f
        FAIL "queue_msix_vector 1 refused"
8:      cmpl $0xffff, %eax
        je 9f
        FAIL "queue_msix_vector is not NO_VECTOR after reset"
9:      movl dma, %ebx                   # zero the rings
        pushl %edi
        movl %ebx, %edi
        movl $0x100, %ecx
        xorl %eax, %eax
        rep stosl
        popl %edi
        leal D_DESC(%ebx), %eax          # addresses as two 32-bit halves
        movl %eax, C_QDESC(%edi)
        movl $0, C_QDESC + 4(%edi)
        leal D_AVAIL(%ebx), %eax
        movl %eax, C_QDRIVER(%edi)
        movl $0, C_QDRIVER + 4(%edi)
        leal D_USED(%ebx), %eax
        movl %eax, C_QDEVICE(%edi)
        movl $0, C_QDEVICE + 4(%edi)
        movzwl C_QNOFF(%edi), %eax       # notify address: base + off * multiplier
        imull notify_mult, %eax
        addl notify, %eax
        movl %eax, qnotify
        movw $1, C_QENABLE(%edi)
        cmpw $1, C_QENABLE(%edi)
        je 10f
        FAIL "queue_enable does not read back 1"
10:     cmpl $0, verbose
        je 11f
        PUTS ", using 16, notify at "
        movl qnotify, %eax
        subl notify, %eax
        call print_hex32
        call newline
11:     movw $0, avail_idx
        movw $0, last_used
        movb $S_DRIVER_OK, %al
        call set_status
        movzbl C_STATUS(%edi), %eax
        cmpl $(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK), %eax
        je 12f
        PUTS "  status "
        call print_hex32
        call newline
        FAIL "device_status is not 0x0f after DRIVER_OK"
12:     cmpl $0, verbose
        je 13f
        movl devcfg, %esi
        PUTS "  capacity "
        movl (%esi), %eax
        call print_dec
        PUTS " sectors"
        cmpl $0, ro
        je 14f
        PUTS ", read-only"
14:     call newline
13:     popal
        ret

# msix_setup: table entries 0 and 1 (fixed, edge, APIC ID 0, vectors
# vec_cfg and vec_q), unmasked, then MSI-X enabled without the function
# mask: what pci_alloc_irq_vectors leaves for the driver.
msix_setup:
        pushal
        movl msix_table, %edi
        movl $0xfee00000, 0(%edi)
        movl $0, 4(%edi)
        movl vec_cfg, %eax
        movl %eax, 8(%edi)
        movl $0, 12(%edi)
        movl $0xfee00000, 16(%edi)
        movl $0, 20(%edi)
        movl vec_q, %eax
        movl %eax, 24(%edi)
        movl $0, 28(%edi)
        movl cur_bdf, %ebx
        movl msix_cap, %ecx
        call cf8_read32
        shrl $16, %eax
        andl $0x3fff, %eax               # function mask off
        orl $0x8000, %eax                # MSI-X enable
        addl $2, %ecx
        call cf8_write16
        popal
        ret

# ---------------------------------------------------------------------------
# Requests.
# ---------------------------------------------------------------------------

# do_request: EAX = type, EDX = sector, ESI = data, ECX = data length (0:
# none), EBP = 1 when the data is device-writable. EAX = the status byte.
# The chain is header -> data -> status, in an indirect table when
# INDIRECT_DESC was negotiated, else descriptors 0-2.
do_request:
        pushl %ebx
        pushl %ecx
        pushl %edx
        pushl %edi
        movl dma, %ebx
        movl %eax, D_HDR(%ebx)
        movl $0, D_HDR + 4(%ebx)
        movl %edx, D_HDR + 8(%ebx)
        movl $0, D_HDR + 12(%ebx)
        movb $0xff, D_STATUS(%ebx)
        leal D_DESC(%ebx), %edi
        cmpl $0, use_indirect
        je 1f
        leal D_IND(%ebx), %edi
1:      leal D_HDR(%ebx), %eax           # entry 0: header, device-readable
        movl %eax, 0(%edi)
        movl $0, 4(%edi)
        movl $16, 8(%edi)
        movw $DESC_NEXT, 12(%edi)
        movw $1, 14(%edi)
        movl $2, %edx                    # entries so far + status
        testl %ecx, %ecx
        jz 3f
        movl %esi, 16(%edi)              # entry 1: data
        movl $0, 20(%edi)
        movl %ecx, 24(%edi)
        movw $DESC_NEXT, %ax
        testl %ebp, %ebp
        jz 2f
        orw $DESC_WRITE, %ax
2:      movw %ax, 28(%edi)
        movw $2, 30(%edi)
        movl $3, %edx
3:      leal -1(%edx), %eax              # the status entry: index EDX-1
        shll $4, %eax
        addl %edi, %eax
        pushl %ecx
        leal D_STATUS(%ebx), %ecx
        movl %ecx, 0(%eax)
        popl %ecx
        movl $0, 4(%eax)
        movl $1, 8(%eax)
        movw $DESC_WRITE, 12(%eax)
        movw $0, 14(%eax)
        cmpl $0, use_indirect
        je 4f
        leal D_IND(%ebx), %eax           # descriptor 0 points at the table
        movl %eax, D_DESC(%ebx)
        movl $0, D_DESC + 4(%ebx)
        shll $4, %edx
        movl %edx, D_DESC + 8(%ebx)
        movw $DESC_INDIRECT, D_DESC + 12(%ebx)
        movw $0, D_DESC + 14(%ebx)
4:      movzwl avail_idx, %eax           # avail ring: head 0
        andl $(QSIZE - 1), %eax
        movw $0, D_AVAIL + 4(%ebx,%eax,2)
        movw last_used, %ax              # used_event: interrupt on the next
        movw %ax, D_AVAIL + 4 + 2 * QSIZE(%ebx)
        incw avail_idx
        movw avail_idx, %ax
        movw %ax, D_AVAIL + 2(%ebx)      # publish (x86 keeps stores in order)
        movl qnotify, %eax               # vp_notify: 16-bit queue index
        movw $0, (%eax)
        movl $POLL_BUDGET, %ecx
5:      movw D_USED + 2(%ebx), %ax
        cmpw last_used, %ax
        jne 6f
        decl %ecx
        jnz 5b
        FAIL "request not completed (used ring idle)"
6:      movzwl last_used, %eax
        andl $(QSIZE - 1), %eax
        cmpl $0, D_USED + 4(%ebx,%eax,8)
        je 7f
        FAIL "used element with a head we did not make available"
7:      incw last_used
        movzbl D_STATUS(%ebx), %eax
        popl %edi
        popl %edx
        popl %ecx
        popl %ebx
        ret

# read_check: read sector EDX (1) into D_DATA and compare it with the host
# test's pattern, byte i = i*7 + sector*13.
read_check:
        pushal
        movl dma, %edi
        addl $D_DATA, %edi
        pushl %edi
        movl $128, %ecx
        xorl %eax, %eax
        rep stosl
        popl %esi
        movl $T_IN, %eax
        movl $512, %ecx
        movl $1, %ebp
        call do_request
        testl %eax, %eax
        jz 1f
        FAIL "IN request failed"
1:      imull $13, %edx, %eax            # expected first byte
        xorl %ecx, %ecx
2:      cmpb %al, (%esi,%ecx)
        je 3f
        PUTS "  sector byte "
        movl %ecx, %eax
        call print_dec
        PUTS " differs\n"
        FAIL "sector does not hold the pattern the host wrote"
3:      addb $7, %al
        incl %ecx
        cmpl $512, %ecx
        jb 2b
        popal
        ret

# check_irq: after a completion, the interrupt the device sent: the queue
# vector in the LAPIC's IRR (MSI-X, checked once: it stays pending), or the
# PCI status interrupt bit, the ISR queue bit and the bit's clearing by the
# ISR read (INTx). Both are polled: the interrupt follows the used index.
check_irq:
        pushal
        cmpl $0, use_msix
        je 5f
        cmpl $0, irq_seen
        jne 9f
        movl vec_q, %eax
        movl %eax, %ecx
        shrl $5, %eax
        shll $4, %eax
        leal LAPIC + 0x200(%eax), %esi   # IRR word of the vector
        andl $31, %ecx
        movl $1, %edx
        shll %cl, %edx
        movl $POLL_BUDGET, %ecx
1:      testl %edx, (%esi)
        jnz 2f
        decl %ecx
        jnz 1b
        FAIL "no MSI-X interrupt in the local APIC's IRR"
2:      PUTS "  MSI-X: vector "
        movl vec_q, %eax
        call print_hex32
        PUTS " pending in the local APIC\n"
        movl $1, irq_seen
        jmp 9f
5:      movl cur_bdf, %ebx
        movl $0x04, %ecx
        movl $POLL_BUDGET, %edi
6:      call cf8_read32
        testl $0x00080000, %eax          # status bit 3: interrupt status
        jnz 7f
        decl %edi
        jnz 6b
        FAIL "INTx: the PCI status interrupt bit is not set"
7:      movl isr, %esi
        movzbl (%esi), %edx              # read-to-clear
        testl $1, %edx
        jnz 8f
        FAIL "INTx: ISR lacks the queue bit"
8:      call cf8_read32
        testl $0x00080000, %eax
        jz 81f
        FAIL "INTx: the interrupt bit stays set after the ISR read"
81:     cmpl $0, irq_seen
        jne 9f
        movl $1, irq_seen
        PUTS "  INTx: PCI status interrupt bit set, ISR "
        movl %edx, %eax
        call print_hex32
        PUTS ", cleared by the ISR read\n"
9:      popal
        ret

# run_requests: GET_ID, IN sector 1, OUT sector 2, FLUSH, IN sector 2.
run_requests:
        pushal
        movl dma, %esi
        addl $D_ID, %esi
        movl $0, (%esi)
        movl $0, 4(%esi)
        movl $0, 8(%esi)
        movl $0, 12(%esi)
        movl $0, 16(%esi)
        movl $0, 20(%esi)
        movl $T_GET_ID, %eax
        xorl %edx, %edx
        movl $20, %ecx
        movl $1, %ebp
        call do_request
        testl %eax, %eax
        jz 1f
        FAIL "GET_ID failed"
1:      PUTS "  serial \""
        call puts                        # NUL-padded, or exactly 20 bytes + our NUL
        PUTS "\"\n"
        call check_irq

        movl $1, %edx
        call read_check
        PUTS "  read sector 1: the host's pattern ("
        cmpl $0, use_indirect
        je 2f
        PUTS "indirect descriptors)\n"
        jmp 3f
2:      PUTS "direct descriptors)\n"
3:      call check_irq

        movl dma, %esi                   # sector 2 pattern: i*3 + 0x5a + disk
        addl $D_WDATA, %esi
        movl disk, %eax
        addl $0x5a, %eax
        xorl %ecx, %ecx
4:      movb %al, (%esi,%ecx)
        addb $3, %al
        incl %ecx
        cmpl $512, %ecx
        jb 4b
        movl $T_OUT, %eax
        movl $2, %edx
        movl $512, %ecx
        xorl %ebp, %ebp
        call do_request
        cmpl $0, ro
        je 5f
        cmpl $1, %eax
        je 41f
        FAIL "a write to a read-only disk did not fail with IOERR"
41:     PUTS "  write to the read-only disk: IOERR, as it should\n"
        call check_irq
        jmp 9f
5:      testl %eax, %eax
        jz 6f
        FAIL "OUT request failed"
6:      PUTS "  wrote sector 2\n"
        call check_irq
        testl $F_FLUSH, drv_lo
        jz 7f
        movl $T_FLUSH, %eax
        xorl %edx, %edx
        xorl %ecx, %ecx
        call do_request
        testl %eax, %eax
        jz 61f
        FAIL "FLUSH failed"
61:     PUTS "  flush: ok\n"
        call check_irq
7:      movl dma, %edi                   # read sector 2 back
        addl $D_DATA, %edi
        movl %edi, %esi
        movl $T_IN, %eax
        movl $2, %edx
        movl $512, %ecx
        movl $1, %ebp
        call do_request
        testl %eax, %eax
        jz 8f
        FAIL "IN of sector 2 failed"
8:      movl dma, %edi
        addl $D_WDATA, %edi
        movl $128, %ecx
        repe cmpsl
        je 81f
        FAIL "sector 2 does not read back what was written"
81:     PUTS "  read back sector 2: ok\n"
        call check_irq
9:      popal
        ret

# bogus_head: make head index 16 (of 16) available. The device must set
# DEVICE_NEEDS_RESET and the ISR's configuration bit; a reset and set-up
# bring it back.
bogus_head:
        pushal
        movl dma, %ebx
        movzwl avail_idx, %eax
        andl $(QSIZE - 1), %eax
        movw $QSIZE, D_AVAIL + 4(%ebx,%eax,2)
        incw avail_idx
        movw avail_idx, %ax
        movw %ax, D_AVAIL + 2(%ebx)
        movl qnotify, %eax
        movw $0, (%eax)
        movl common, %edi
        movl $POLL_BUDGET, %ecx
1:      testb $S_NEEDS_RESET, C_STATUS(%edi)
        jnz 2f
        decl %ecx
        jnz 1b
        FAIL "head index past the queue: no DEVICE_NEEDS_RESET"
2:      PUTS "  head index 16 of 16: device_status "
        movzbl C_STATUS(%edi), %eax
        call print_hex32
        PUTS " (DEVICE_NEEDS_RESET)\n"
        movl isr, %esi
        movl $POLL_BUDGET, %ecx
3:      movzbl (%esi), %eax
        testl $2, %eax
        jnz 4f
        decl %ecx
        jnz 3b
        FAIL "no configuration change in the ISR after DEVICE_NEEDS_RESET"
4:      PUTS "  configuration change in the ISR\n"
        call device_setup
        movl $1, %edx
        call read_check
        PUTS "  after a reset the disk works again\n"
        popal
        ret

# ---------------------------------------------------------------------------
# Configuration access (mechanism #1). EBX = bus << 16 | dev << 11 | fn << 8,
# ECX = register. Everything but EAX is preserved.
# ---------------------------------------------------------------------------
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

cf8_read32:
        pushl %edx
        call cf8_select
        movw $CONFIG_DATA, %dx
        inl %dx, %eax
        popl %edx
        ret

cf8_write32:
        pushl %edx
        call cf8_select
        movw $CONFIG_DATA, %dx
        outl %eax, %dx
        popl %edx
        ret

# cf8_write16: AX at EBX/ECX (ECX may be 2 mod 4): port 0xCFC + (reg & 2).
cf8_write16:
        pushl %edx
        call cf8_select
        movl %ecx, %edx
        andl $2, %edx
        addl $CONFIG_DATA, %edx
        outw %ax, %dx
        popl %edx
        ret

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

# print_bdf: "BB:DD.F" of cur_bus/cur_dev/cur_fn.
print_bdf:
        pushl %eax
        pushl %ecx
        movl $2, %ecx
        movl cur_bus, %eax
        call print_hex_n
        movb $':', %al
        call putc
        movl cur_dev, %eax
        call print_hex_n
        movb $'.', %al
        call putc
        movl $1, %ecx
        movl cur_fn, %eax
        call print_hex_n
        popl %ecx
        popl %eax
        ret

# ---------------------------------------------------------------------------
        .section .rodata
opt_strict:     .asciz "virtioblk.strict"

        .data
        .balign 4
strict:         .long 0
verbose:        .long 0
nbus:           .long 0
busq:           .fill MAX_BUSES, 4, 0
ndisks:         .long 0
disks:          .fill MAX_DISKS, 4, 0
disk:           .long 0
cur_bus:        .long 0
cur_dev:        .long 0
cur_fn:         .long 0
cur_bdf:        .long 0
nslots:         .long 0
bar_lin:        .fill 6, 4, 0
cap_seen:       .long 0
cap_bar:        .fill 8, 4, 0
cap_off:        .fill 8, 4, 0
cap_len:        .fill 8, 4, 0
notify_mult:    .long 0
pcicfg_cap:     .long 0
msix_cap:       .long 0
msix_table:     .long 0
# Linear addresses of the regions, in cfg_type order 1-4 (map_regions).
common:         .long 0
notify:         .long 0
isr:            .long 0
devcfg:         .long 0
qnotify:        .long 0
feat_lo:        .long 0
feat_hi:        .long 0
drv_lo:         .long 0
drv_hi:         .long 0
use_msix:       .long 0
use_indirect:   .long 0
use_event:      .long 0
ro:             .long 0
irq_seen:       .long 0
vec_cfg:        .long 0
vec_q:          .long 0
dma:            .long 0
avail_idx:      .word 0
last_used:      .word 0
