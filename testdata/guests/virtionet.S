# virtionet.S: virtio-net over the modern virtio-pci transport, driven the
# way Linux's virtio_pci_modern and virtio_net drivers do it, with polling
# instead of interrupt handlers (this host's emulator cannot IRET).
#
#  * Paging, PCI scan and the transport as virtio_pci.inc does them; the
#    first 1af4:1041 function is the NIC.
#  * Set-up as virtnet_probe: reset (status 0, read back until 0),
#    ACKNOWLEDGE, DRIVER (negotiate); the device must offer VERSION_1 and
#    MAC; driver
#    features VERSION_1 plus the offered ones of MAC, STATUS, MRG_RXBUF,
#    CTRL_VQ, CTRL_GUEST_OFFLOADS, GUEST_CSUM; FEATURES_OK must stick. The
#    MAC and, with STATUS, LINK_UP from the device configuration. Queues
#    receiveq1 (0), transmitq1 (1) and, with CTRL_VQ, the control queue
#    (2): 16 entries each, no MSI-X vector (INTx, polled). DRIVER_OK.
#  * Receive buffers as add_recvbuf_mergeable/small: 16 device-writable
#    buffers of 2 KiB, one descriptor each, made available, the queue
#    notified (a 16-bit write of its index to its notification address).
#  * Transmit as xmit_skb: the 12-byte virtio_net_hdr_v1 (all zero) and a
#    64-byte frame in two descriptors: to ff:ff:ff:ff:ff:ff from our MAC,
#    EtherType 0x88b5, byte 14 = 0x5a (the marker), byte i = i ^ 0x5a after
#    it. The used ring is polled for its completion. The host test sees it
#    on the tap.
#  * With CTRL_GUEST_OFFLOADS: GUEST_OFFLOADS_SET 0 on the control queue
#    (header, data and ack in three descriptors, as virtnet_send_command);
#    the ack must be VIRTIO_NET_OK.
#  * Receive: poll the used ring for the frame the host test sends after
#    seeing ours: 100 bytes to our MAC, EtherType 0x88b5, marker 0xa5, byte i
#    = i ^ 0xa5; every byte, the used length (header + 100) and, with
#    MRG_RXBUF, num_buffers = 1 are checked. Other frames are counted and
#    their buffers made available again.
#  * Reset and the whole set-up again (what Linux does on every resume from
#    S3), then a second frame (marker 0x5b).
#  * `virtionet.bench` on the command line: then BENCH_FRAMES more frames
#    (marker 0x5c), each sent and its completion awaited, between the lines
#    "virtionet: bench start" and "virtionet: bench done" for the host to
#    time.
# Then "virtionet: passed" and PASS.

        .include "lib.inc"
        .include "virtio_pci.inc"
        GUEST virtionet

        .set POLL_BUDGET, 5000000        # ~5-20 s of emulated polling
        .set QSIZE, 16
        .set BENCH_FRAMES, 2000

        .set RXQ_RING, 0x400000
        .set TXQ_RING, 0x401000
        .set CTRLQ_RING, 0x402000
        .set RXBUF, 0x410000             # QSIZE buffers of RXBUF_LEN
        .set RXBUF_LEN, 2048
        .set TXBUF, 0x420000             # header, then the frame
        .set CTRLBUF, 0x421000           # class, cmd; data at +8; ack at +16

        .set HDR_LEN, 12                 # struct virtio_net_hdr_v1
        .set TX_LEN, 64
        .set RX_LEN, 100

        .set F_GUEST_CSUM, 1 << 1
        .set F_CTRL_GUEST_OFFLOADS, 1 << 2
        .set F_MAC, 1 << 5
        .set F_MRG_RXBUF, 1 << 15
        .set F_STATUS, 1 << 16
        .set F_CTRL_VQ, 1 << 17
        .set WANT_LO, F_GUEST_CSUM | F_CTRL_GUEST_OFFLOADS | F_MAC | F_MRG_RXBUF | F_STATUS | F_CTRL_VQ

        .text
        .code32
guest_main:
        PUTS "virtionet: start\n"
        call paging_init
        movl $0x10411af4, %eax
        call find_functions
        cmpl $0, nvfuncs
        jne 1f
        FAIL "no virtio-net function (1af4:1041) found"
1:      movl vfuncs, %ebx
        call select_function
        PUTS "virtio-net "
        call print_bdf
        call newline
        call parse_caps
        call map_regions
        movl $1, verbose
        call net_setup
        movl $0, verbose
        call rx_post_all
        PUTS "  16 receive buffers of 2048 bytes posted\n"
        movb $0x5a, %al
        call tx_build
        call tx_submit
        PUTS "  sent a 64-byte frame (header and frame in 2 descriptors), marker 0x5a\n"
        call ctrl_offloads
        call rx_check
        call net_setup                   # reset and everything again (S3 resume)
        call rx_post_all
        movb $0x5b, %al
        call tx_build
        call tx_submit
        PUTS "  reset (status 0) and set up again: sent a frame, marker 0x5b\n"
        movl $opt_bench, %esi
        call cmdline_has
        testl %eax, %eax
        jz 3f
        movb $0x5c, %al
        call tx_build
        PUTS "virtionet: bench start\n"
        movl $BENCH_FRAMES, %ecx
2:      call tx_submit
        decl %ecx
        jnz 2b
        PUTS "virtionet: bench done\n"
3:      call device_reset
        PUTS "virtionet: passed\n"
        PASS

# ---------------------------------------------------------------------------
# net_setup: reset and initialise as virtio_dev_probe + virtnet_probe.
# Prints details when `verbose`.
# ---------------------------------------------------------------------------
net_setup:
        pushal
        movl $WANT_LO, %eax
        movl $F_MAC, %edx
        movl verbose, %ecx
        call negotiate
        movl common, %edi
        movl devcfg, %esi                # struct virtio_net_config
        xorl %ecx, %ecx
4:      movb (%esi,%ecx), %al            # byte reads, as virtio_cread_bytes
        movb %al, mac(,%ecx)
        incl %ecx
        cmpl $6, %ecx
        jb 4b
        cmpl $0, verbose
        je 8f
        PUTS "  mac "
        movl $mac, %esi
        call print_mac
        testl $F_STATUS, drv_lo
        jz 6f
        movl devcfg, %esi
        testw $1, 6(%esi)                # VIRTIO_NET_S_LINK_UP
        jnz 5f
        FAIL "the link is down"
5:      PUTS ", link up"
6:      call newline
8:      movl $0, %eax                    # receiveq1
        movl $RXQ_RING, %ebx
        movl $QSIZE, %ecx
        call queue_setup
        movl %eax, rx_notify
        movl $1, %eax                    # transmitq1
        movl $TXQ_RING, %ebx
        call queue_setup
        movl %eax, tx_notify
        testl $F_CTRL_VQ, drv_lo
        jz 9f
        movl $2, %eax                    # controlq (queue 2 without MQ)
        movl $CTRLQ_RING, %ebx
        call queue_setup
        movl %eax, ctrl_notify
9:      cmpl $0, verbose
        je 10f
        PUTS "  queues rx 0, tx 1"
        testl $F_CTRL_VQ, drv_lo
        jz 91f
        PUTS ", ctrl 2"
91:     PUTS ": 16 entries, no MSI-X vector\n"
10:     movw $0, rx_avail
        movw $0, rx_used
        movw $0, tx_avail
        movw $0, tx_used
        movw $0, ctrl_avail
        movw $0, ctrl_used
        movb $S_DRIVER_OK, %al
        call set_status
        movzbl C_STATUS(%edi), %eax
        cmpl $(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK), %eax
        je 11f
        PUTS "  status "
        call print_hex32
        call newline
        FAIL "device_status is not 0x0f after DRIVER_OK"
11:     popal
        ret

# print_mac: ESI = 6 bytes, printed as aa:bb:cc:dd:ee:ff.
print_mac:
        pushal
        xorl %ebx, %ebx
        movl $2, %ecx
1:      movzbl (%esi,%ebx), %eax
        call print_hex_n
        incl %ebx
        cmpl $6, %ebx
        je 2f
        movb $':', %al
        call putc
        jmp 1b
2:      popal
        ret

# ---------------------------------------------------------------------------
# Receive.
# ---------------------------------------------------------------------------

# rx_post_all: descriptor i = buffer i (device-writable), all made available.
rx_post_all:
        pushal
        xorl %ecx, %ecx
1:      movl %ecx, %eax
        shll $11, %eax                   # * RXBUF_LEN
        addl $RXBUF, %eax
        movl %ecx, %edi
        shll $4, %edi
        addl $(RXQ_RING + R_DESC), %edi
        movl %eax, 0(%edi)
        movl $0, 4(%edi)
        movl $RXBUF_LEN, 8(%edi)
        movw $DESC_WRITE, 12(%edi)
        movw $0, 14(%edi)
        movw %cx, RXQ_RING + R_AVAIL + 4(,%ecx,2)
        incl %ecx
        cmpl $QSIZE, %ecx
        jb 1b
        movw $QSIZE, rx_avail
        movw $QSIZE, RXQ_RING + R_AVAIL + 2  # publish (x86 keeps stores in order)
        movl rx_notify, %eax             # vp_notify: 16-bit queue index
        movw $0, (%eax)
        popal
        ret

# rx_repost: EAX = descriptor (buffer) index made available again.
rx_repost:
        pushal
        movzwl rx_avail, %ecx
        andl $(QSIZE - 1), %ecx
        movw %ax, RXQ_RING + R_AVAIL + 4(,%ecx,2)
        incw rx_avail
        movw rx_avail, %ax
        movw %ax, RXQ_RING + R_AVAIL + 2
        movl rx_notify, %eax
        movw $0, (%eax)
        popal
        ret

# rx_check: poll for the host's frame (marker 0xa5) and check it; other
# frames are skipped and their buffers reposted.
rx_check:
        pushal
        movl $0, skipped
1:      movl $POLL_BUDGET, %ecx
2:      movw RXQ_RING + R_USED + 2, %ax
        cmpw rx_used, %ax
        jne 3f
        decl %ecx
        jnz 2b
        FAIL "no frame from the host (receive used ring idle)"
3:      movzwl rx_used, %eax
        andl $(QSIZE - 1), %eax
        movl RXQ_RING + R_USED + 4(,%eax,8), %ebx    # id
        movl RXQ_RING + R_USED + 8(,%eax,8), %edx    # len
        incw rx_used
        cmpl $QSIZE, %ebx
        jb 4f
        FAIL "used element with an id we did not make available"
4:      movl %ebx, %esi
        shll $11, %esi
        addl $RXBUF, %esi                # ESI = the buffer (header first)
        cmpl $(HDR_LEN + 15), %edx
        jb 5f
        cmpw $0xb588, HDR_LEN + 12(%esi) # EtherType 0x88b5, big-endian
        jne 5f
        cmpb $0xa5, HDR_LEN + 14(%esi)
        je 6f
5:      incl skipped                     # someone else's frame
        movl %ebx, %eax
        call rx_repost
        jmp 1b
6:      cmpl $(HDR_LEN + RX_LEN), %edx
        je 7f
        PUTS "  used length "
        movl %edx, %eax
        call print_dec
        call newline
        FAIL "the host's frame has the wrong length"
7:      testl $F_MRG_RXBUF, drv_lo
        jz 8f
        cmpw $1, 10(%esi)
        je 8f
        FAIL "num_buffers is not 1 for a frame in one buffer"
8:      xorl %ecx, %ecx                  # destination: our MAC
81:     movb mac(,%ecx), %al
        cmpb %al, HDR_LEN(%esi,%ecx)
        je 82f
        FAIL "the host's frame is not addressed to our MAC"
82:     incl %ecx
        cmpl $6, %ecx
        jb 81b
        movl $15, %ecx                   # payload: byte i = i ^ 0xa5
9:      movb %cl, %al
        xorb $0xa5, %al
        cmpb %al, HDR_LEN(%esi,%ecx)
        je 10f
        PUTS "  frame byte "
        movl %ecx, %eax
        call print_dec
        PUTS " differs\n"
        FAIL "the host's frame arrived corrupted"
10:     incl %ecx
        cmpl $RX_LEN, %ecx
        jb 9b
        PUTS "  received the host's 100-byte frame from "
        pushl %esi
        addl $(HDR_LEN + 6), %esi
        call print_mac
        popl %esi
        PUTS ", every byte as sent"
        testl $F_MRG_RXBUF, drv_lo
        jz 11f
        PUTS ", num_buffers 1"
11:     PUTS " ("
        movl skipped, %eax
        call print_dec
        PUTS " other frames skipped)\n"
        popal
        ret

# ---------------------------------------------------------------------------
# Transmit.
# ---------------------------------------------------------------------------

# tx_build: AL = marker. The header (zero) and the frame at TXBUF; the chain
# in descriptors 0 (header) and 1 (frame).
tx_build:
        pushal
        movl $TXBUF, %edi
        movb %al, %dl
        xorl %eax, %eax
        movl %eax, 0(%edi)               # virtio_net_hdr_v1: no offloads
        movl %eax, 4(%edi)
        movl %eax, 8(%edi)
        addl $HDR_LEN, %edi
        movl $0xffffffff, 0(%edi)        # broadcast
        movw $0xffff, 4(%edi)
        movl mac, %eax                   # source: our MAC
        movl %eax, 6(%edi)
        movw mac + 4, %ax
        movw %ax, 10(%edi)
        movw $0xb588, 12(%edi)
        movb %dl, 14(%edi)
        movl $15, %ecx
1:      movb %cl, %al
        xorb %dl, %al
        movb %al, (%edi,%ecx)
        incl %ecx
        cmpl $TX_LEN, %ecx
        jb 1b
        movl $(TXQ_RING + R_DESC), %edi
        movl $TXBUF, 0(%edi)
        movl $0, 4(%edi)
        movl $HDR_LEN, 8(%edi)
        movw $DESC_NEXT, 12(%edi)
        movw $1, 14(%edi)
        movl $(TXBUF + HDR_LEN), 16(%edi)
        movl $0, 20(%edi)
        movl $TX_LEN, 24(%edi)
        movw $0, 28(%edi)
        movw $0, 30(%edi)
        popal
        ret

# tx_submit: make chain 0 available, notify, poll for its completion.
tx_submit:
        pushal
        movzwl tx_avail, %ecx
        andl $(QSIZE - 1), %ecx
        movw $0, TXQ_RING + R_AVAIL + 4(,%ecx,2)
        incw tx_avail
        movw tx_avail, %ax
        movw %ax, TXQ_RING + R_AVAIL + 2
        movl tx_notify, %eax
        movw $1, (%eax)                  # transmitq1's index
        movl $POLL_BUDGET, %ecx
1:      movw TXQ_RING + R_USED + 2, %ax
        cmpw tx_used, %ax
        jne 2f
        decl %ecx
        jnz 1b
        FAIL "transmit not completed (used ring idle)"
2:      movzwl tx_used, %eax
        andl $(QSIZE - 1), %eax
        cmpl $0, TXQ_RING + R_USED + 4(,%eax,8)
        je 3f
        FAIL "transmit used element with a head we did not make available"
3:      incw tx_used
        popal
        ret

# ---------------------------------------------------------------------------
# Control queue: GUEST_OFFLOADS_SET 0 (class 5, command 0, le64 offloads),
# when CTRL_VQ and CTRL_GUEST_OFFLOADS were negotiated.
# ---------------------------------------------------------------------------
ctrl_offloads:
        pushal
        movl drv_lo, %eax
        andl $(F_CTRL_VQ | F_CTRL_GUEST_OFFLOADS), %eax
        cmpl $(F_CTRL_VQ | F_CTRL_GUEST_OFFLOADS), %eax
        jne 9f
        movl $CTRLBUF, %ebx
        movw $0x0005, 0(%ebx)            # class GUEST_OFFLOADS, command SET
        movl $0, 8(%ebx)
        movl $0, 12(%ebx)
        movb $0xff, 16(%ebx)             # ack, written by the device
        movl $(CTRLQ_RING + R_DESC), %edi
        movl %ebx, 0(%edi)
        movl $0, 4(%edi)
        movl $2, 8(%edi)
        movw $DESC_NEXT, 12(%edi)
        movw $1, 14(%edi)
        leal 8(%ebx), %eax
        movl %eax, 16(%edi)
        movl $0, 20(%edi)
        movl $8, 24(%edi)
        movw $DESC_NEXT, 28(%edi)
        movw $2, 30(%edi)
        leal 16(%ebx), %eax
        movl %eax, 32(%edi)
        movl $0, 36(%edi)
        movl $1, 40(%edi)
        movw $DESC_WRITE, 44(%edi)
        movw $0, 46(%edi)
        movw $0, CTRLQ_RING + R_AVAIL + 4
        movw $1, ctrl_avail
        movw $1, CTRLQ_RING + R_AVAIL + 2
        movl ctrl_notify, %eax
        movw $2, (%eax)
        movl $POLL_BUDGET, %ecx
1:      cmpw $0, CTRLQ_RING + R_USED + 2
        jne 2f
        decl %ecx
        jnz 1b
        FAIL "control command not completed"
2:      cmpb $0, 16(%ebx)                # VIRTIO_NET_OK
        je 3f
        PUTS "  control ack "
        movzbl 16(%ebx), %eax
        call print_dec
        call newline
        FAIL "GUEST_OFFLOADS_SET 0 refused"
3:      PUTS "  control queue: GUEST_OFFLOADS_SET 0 acknowledged\n"
9:      popal
        ret

# ---------------------------------------------------------------------------
        .section .rodata
opt_bench:      .asciz "virtionet.bench"

        .data
        .balign 4
verbose:        .long 0
skipped:        .long 0
rx_notify:      .long 0
tx_notify:      .long 0
ctrl_notify:    .long 0
mac:            .fill 8, 1, 0
rx_avail:       .word 0
rx_used:        .word 0
tx_avail:       .word 0
tx_used:        .word 0
ctrl_avail:     .word 0
ctrl_used:      .word 0
