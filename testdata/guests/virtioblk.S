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
        .include "virtio_pci.inc"
        GUEST virtioblk

        .set POLL_BUDGET, 5000000        # ~5-20 s of emulated polling

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

        .set F_SEG_MAX, 1 << 2
        .set F_RO, 1 << 5
        .set F_BLK_SIZE, 1 << 6
        .set F_FLUSH, 1 << 9
        .set F_INDIRECT, 1 << 28
        .set F_EVENT_IDX, 1 << 29
        .set WANT_LO, F_SEG_MAX | F_RO | F_BLK_SIZE | F_FLUSH | F_INDIRECT | F_EVENT_IDX

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
        PUTS "virtioblk: paging on (compatibility mode), BARs mapped from 0x40000000\n"
        call lapic_enable
        movl $0x10421af4, %eax           # every virtio-blk function
        call find_functions
        cmpl $0, nvfuncs
        jne 1f
        FAIL "no virtio-blk function (1af4:1042) found"
1:      xorl %esi, %esi
2:      cmpl nvfuncs, %esi
        jae 3f
        movl %esi, disk
        movl vfuncs(,%esi,4), %ebx
        call disk_test
        incl %esi
        jmp 2b
3:      PUTS "virtioblk: "
        movl nvfuncs, %eax
        call print_dec
        PUTS " disks passed\n"
        PASS

# lapic_enable: SVR bit 8 (APIC software enable), so MSIs reach the IRR.
lapic_enable:
        pushl %eax
        movl LAPIC + 0xf0, %eax
        orl $0x100, %eax
        movl %eax, LAPIC + 0xf0
        popl %eax
        ret

# ---------------------------------------------------------------------------
# disk_test: the whole sequence for the disk at EBX (bdf); `disk` is its index.
# ---------------------------------------------------------------------------
disk_test:
        pushal
        call select_function             # pci_enable_device + pci_set_master
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
        cmpl $0, use_msix
        je 2f
        PUTS " (MSI-X)\n"
        jmp 3f
2:      PUTS " (INTx)\n"
3:      movl $1, caps_msix               # the caps line names MSI-X
        call parse_caps
        cmpl $0, use_msix
        je 4f
        cmpl $0, msix_cap
        jne 4f
        FAIL "no MSI-X capability"
4:      call map_regions
        call map_msix_table
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

# map_msix_table: msix_table = linear address of the MSI-X table (after
# map_regions, so its BAR is mapped after theirs).
map_msix_table:
        pushal
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
# Features.
# ---------------------------------------------------------------------------

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
        movl $WANT_LO, %eax              # offered ones of these, none required
        xorl %edx, %edx
        movl verbose, %ecx               # print the features when verbose
        call negotiate
        movl common, %edi
        movl drv_lo, %eax
        movl %eax, %edx
        andl $F_INDIRECT, %edx
        movl %edx, use_indirect
        movl %eax, %edx
        andl $F_EVENT_IDX, %edx
        movl %edx, use_event
        andl $F_RO, %eax
        movl %eax, ro
        cmpl $0, use_msix
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
        .section .rodata
opt_strict:     .asciz "virtioblk.strict"

        .data
        .balign 4
strict:         .long 0
verbose:        .long 0
disk:           .long 0
msix_table:     .long 0
qnotify:        .long 0
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
