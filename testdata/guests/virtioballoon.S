# virtioballoon.S: the virtio memory balloon (virtio-pci device 1af4:1045)
# driven the way Linux v6.1's drivers/virtio/virtio_balloon.c drives it,
# with polling instead of interrupt handlers (this host's emulator cannot
# IRET): where Linux takes the configuration interrupt (vp_interrupt reads
# the ISR, INTx) or a queue callback, the event loop reads the ISR and the
# used rings.
#
#  * Paging, PCI scan and the transport as virtio_pci.inc does them; the
#    first 1af4:1045 function is the balloon. The RAM total and its top come
#    from the PVH memory map, the ACPI PM timer from the FADT (bounds every
#    wait: ~60 s a phase).
#  * virtballoon_probe: reset, ACKNOWLEDGE, DRIVER; VERSION_1 required;
#    driver features as Linux's table filtered by virtballoon_validate (no
#    page poisoning in this guest: PAGE_POISON dropped, REPORTING kept):
#    the offered ones of MUST_TELL_HOST, STATS_VQ, DEFLATE_ON_OOM,
#    REPORTING, plus the ring's INDIRECT_DESC and EVENT_IDX. FREE_PAGE_HINT
#    is not implemented here and not taken. STATS_VQ, DEFLATE_ON_OOM and
#    REPORTING must be offered (QEMU: deflate-on-oom=on,
#    free-page-reporting=on). FEATURES_OK must stick.
#  * init_vqs: inflate 0, deflate 1, then the queues of the negotiated
#    features numbered on (virtio_find_vqs skips absent ones): stats 2,
#    reporting 3. Each as large as the device offers, up to 64 entries
#    (QEMU: 128, reporting 32; Linux refuses a reporting queue below
#    PAGE_REPORTING_CAPACITY, 32), no MSI-X vector. The stats queue is primed with one
#    buffer of update_balloon_stats before DRIVER_OK, and kicked.
#  * DRIVER_OK, then towards_target (num_pages - pages held).
#  * The event loop: the ISR's configuration bit is virtballoon_changed ->
#    update_balloon_size_func: towards_target (num_pages read between two
#    equal config_generation reads); fill_balloon or leak_balloon of at most
#    256 PFNs (VIRTIO_BALLOON_ARRAY_PFNS_MAX), u32 each, in one
#    device-readable buffer (tell_host: add, kick when vring_need_event
#    says so, wait for the used element, used_event = last used index);
#    update_balloon_size writes actual; again until num_pages is reached. A
#    used statistics buffer is stats_request -> stats_handle_request:
#    update_balloon_stats (Linux's 10 tags in its order: SWAP_IN, SWAP_OUT,
#    MAJFLT, MINFLT, HTLB_PGALLOC, HTLB_PGFAIL, MEMFREE, MEMTOT, AVAIL,
#    CACHES; MINFLT counts the buffers sent, so the host can tell fresh
#    statistics from old; free = RAM - 8 MiB - ballooned, with
#    DEFLATE_ON_OOM the total does not shrink), the buffer added again,
#    kicked.
#  * The script: the 1024 balloon pages (16-20 MiB) are written first.
#    Phase 1 waits for the host's target of 1024 pages (4 MiB) and inflates
#    to it ("virtioballoon: inflated 1024 pages"); then a hostile buffer no
#    driver sends: PFNs past RAM, in the 32-bit MMIO hole, 0xffffffff and a
#    page already held (the host ignores or refuses them, never fails).
#    Phase 2 waits for a statistics request and for the target 0, deflates,
#    and checks the deflated pages read as zero (the host dropped them) and
#    take writes. Phase 3: free page reporting as page_reporting does: two
#    written 2 MiB blocks in one scatter-gather list of device-writable
#    buffers (an indirect table with INDIRECT_DESC), kicked, the buffer
#    awaited; then, after the next statistics request (the host looked at
#    its memory meanwhile), the blocks must read as zero.
#  * Freeze and restore (S3): remove_common (nothing held), update actual,
#    reset; virtballoon_restore: the whole set-up again, towards_target.
# Then "virtioballoon: passed" and PASS.

        .include "lib.inc"
        .include "acpi_pm.inc"
        .include "virtio_pci.inc"
        GUEST virtioballoon

        # include/uapi/linux/virtio_balloon.h
        .set F_MUST_TELL_HOST, 1 << 0
        .set F_STATS_VQ, 1 << 1
        .set F_DEFLATE_ON_OOM, 1 << 2
        .set F_FREE_PAGE_HINT, 1 << 3
        .set F_PAGE_POISON, 1 << 4
        .set F_REPORTING, 1 << 5
        .set F_INDIRECT_DESC, 1 << 28
        .set F_EVENT_IDX, 1 << 29
        .set WANT_LO, F_MUST_TELL_HOST | F_STATS_VQ | F_DEFLATE_ON_OOM | F_REPORTING | F_INDIRECT_DESC | F_EVENT_IDX
        .set NEED_LO, F_STATS_VQ | F_DEFLATE_ON_OOM | F_REPORTING
        .set CFG_NUM_PAGES, 0
        .set CFG_ACTUAL, 4
        .set C_CFGGEN, 0x15              # config_generation
        .set ISR_CONFIG, 2
        .set ARRAY_PFNS_MAX, 256         # VIRTIO_BALLOON_ARRAY_PFNS_MAX
        .set NUM_STATS, 10
        .set STAT_SIZE, 10               # struct virtio_balloon_stat, packed

        .set QSIZE, 64                   # at most; less when the device offers less
        .set REPORTING_CAPACITY, 32      # PAGE_REPORTING_CAPACITY
        # Queue records (see q_*): ring, notify address, index, avail
        # shadow, last used, size.
        .set Q_RING, 0
        .set Q_NOTIFY, 4
        .set Q_INDEX, 8
        .set Q_AVAIL, 12
        .set Q_LAST, 16
        .set Q_SIZE, 20
        .set Q_REC, 32

        .set RINGS, 0x400000             # 4 KiB a queue, by role
        .set PFNS, 0x410000              # vb->pfns
        .set STATSBUF, 0x411000          # vb->stats
        .set INDIRECT, 0x412000          # the reporting sg list's table
        .set BALLOON_BASE, 0x01000000    # the pages this guest balloons
        .set BALLOON_PAGES, 1024
        .set TARGET_PAGES, 1024          # what the host sets: 4 MiB
        .set REPORT_A, 0x01800000        # two free 2 MiB blocks to report
        .set REPORT_B, 0x01c00000
        .set BLOCK, 0x200000
        .set GUEST_USED, 8 << 20         # "used" memory in the statistics
        .set CACHES, 1 << 20
        .set MARK, 0x6e6f6c62

        .set POLL_BUDGET, 5000000        # a used element: ~5-20 s of polling
        .set PM_TMR_HZ, 3579545
        .set WAIT_TICKS, 60 * PM_TMR_HZ  # a phase: ~60 s
        .set WAIT_POLLS, 3000000         # without a PM timer
        .set GOAL_INFLATED, 1            # held == TARGET_PAGES
        .set GOAL_DEFLATED, 2            # held == 0 and a stats request seen
        .set GOAL_STATS, 3               # a stats request seen

        .text
        .code32
guest_main:
        PUTS "virtioballoon: start\n"
        call start_info_check
        call memmap_locate              # ESI = map, ECX = entries
        jecxz 1f
        call memmap_total_ram           # EDX:EAX bytes
        movl %eax, totalram
        movl %edx, totalram + 4
        call memmap_top
        jmp 2f
1:      FAIL "no memory map"
2:      movl $0x50434146, %eax          # "FACP"
        call acpi_find_table
        testl %eax, %eax
        jz 3f
        movl %eax, %ebx
        movl $208, %ecx                 # X_PM_TMR_BLK, else PM_TMR_BLK (76)
        movl $76, %edx
        call fadt_io_port
        movl %eax, pm_tmr
3:      PUTS "virtioballoon: RAM "
        movl totalram, %eax
        movl totalram + 4, %edx
        shrdl $10, %edx, %eax
        call print_dec
        PUTS " KiB, top of RAM "
        movl ram_top, %eax
        call print_hex32
        PUTS ", PM timer port "
        movl pm_tmr, %eax
        call print_hex32
        call newline

        call paging_init
        movl $0x10451af4, %eax
        call find_functions
        cmpl $0, nvfuncs
        jne 4f
        FAIL "no virtio-balloon function (1af4:1045) found"
4:      movl vfuncs, %ebx
        call select_function
        PUTS "virtio-balloon "
        call print_bdf
        call newline
        call parse_caps
        call map_regions

        call touch_balloon_pages
        PUTS "virtioballoon: wrote the 1024 pages at 16-20 MiB\n"
        movl $1, verbose
        call balloon_probe
        movl $0, verbose
        PUTS "virtioballoon: ready, waiting for the host's target\n"

        movl $GOAL_INFLATED, %eax
        call event_loop
        PUTS "virtioballoon: inflated 1024 pages (4 MiB), actual 1024\n"
        call hostile_buffer

        movl $GOAL_DEFLATED, %eax
        call event_loop
        call check_deflated

        call report_free
        movl $GOAL_STATS, %eax
        call event_loop
        call check_reported

        call freeze_restore
        PUTS "virtioballoon: passed\n"
        PASS

# memmap_top: ESI = memory map, ECX = entries. ram_top = the end of the
# highest E820_RAM entry below 4 GiB: the first address past that RAM.
memmap_top:
        pushal
        xorl %ebx, %ebx
1:      cmpl $E820_RAM, 16(%esi)
        jne 2f
        cmpl $0, 4(%esi)
        jne 2f
        movl (%esi), %eax
        addl 8(%esi), %eax
        jc 2f
        cmpl %ebx, %eax
        jbe 2f
        movl %eax, %ebx
2:      addl $MEMMAP_ENTRY_SIZE, %esi
        decl %ecx
        jnz 1b
        movl %ebx, ram_top
        popal
        ret

# touch_balloon_pages: one word in each page the balloon will take, so the
# host backs them before the host's first count.
touch_balloon_pages:
        pushl %edi
        movl $BALLOON_BASE, %edi
1:      movl $MARK, (%edi)
        addl $4096, %edi
        cmpl $BALLOON_BASE + BALLOON_PAGES * 4096, %edi
        jb 1b
        popl %edi
        ret

# ---------------------------------------------------------------------------
# virtballoon_probe (and virtballoon_restore): negotiation, init_vqs,
# DRIVER_OK, towards_target.
# ---------------------------------------------------------------------------
balloon_probe:
        pushal
        movl $WANT_LO, %eax              # driver features: the offered ones
        movl $NEED_LO, %edx              # needed: STATS_VQ, DEFLATE_ON_OOM, REPORTING
        movl verbose, %ecx               # print the features when verbose
        call negotiate
        movl common, %edi

        # init_vqs.
        movl $0, held
        movl $qrecs, %esi
        xorl %ebp, %ebp                 # next queue index
        movl $RINGS, %ebx
5:      movl %ebx, Q_RING(%esi)
        movl %ebp, Q_INDEX(%esi)
        movl $0, Q_AVAIL(%esi)
        movl $0, Q_LAST(%esi)
        movw %bp, C_QSELECT(%edi)       # the device's size, at most QSIZE
        movzwl C_QSIZE(%edi), %ecx
        cmpl $QSIZE, %ecx
        jbe 51f
        movl $QSIZE, %ecx
51:     movl %ecx, %eax                 # a power of two, as the spec wants
        decl %eax
        testl %ecx, %eax
        jz 52f
        FAIL "a queue size is not a power of two"
52:     movl %ecx, Q_SIZE(%esi)
        movl %ebp, %eax
        call queue_setup
        movl %eax, Q_NOTIFY(%esi)
        incl %ebp
        addl $Q_REC, %esi
        addl $0x1000, %ebx
        cmpl $4, %ebp                   # inflate, deflate, stats, reporting
        jb 5b
        cmpl $REPORTING_CAPACITY, qrecs + 3 * Q_REC + Q_SIZE
        jae 53f
        FAIL "the reporting queue is smaller than PAGE_REPORTING_CAPACITY"
53:     cmpl $0, verbose
        je 6f
        PUTS "  queues: inflate 0, deflate 1, stats 2, reporting 3, of "
        movl qrecs + Q_SIZE, %eax
        call print_dec
        PUTS ", "
        movl qrecs + Q_REC + Q_SIZE, %eax
        call print_dec
        PUTS ", "
        movl qrecs + 2 * Q_REC + Q_SIZE, %eax
        call print_dec
        PUTS " and "
        movl qrecs + 3 * Q_REC + Q_SIZE, %eax
        call print_dec
        PUTS " entries, no MSI-X vector\n"
        # Prime the stats queue (init_vqs, before DRIVER_OK).
6:      call stats_fill
        movl $qrecs + 2 * Q_REC, %esi
        call stats_add
        cmpl $0, verbose
        je 7f
        PUTS "  stats queue primed: 10 statistics, kicked\n"
7:      movb $S_DRIVER_OK, %al          # virtio_device_ready
        call set_status
        movzbl C_STATUS(%edi), %eax
        cmpl $(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK), %eax
        je 8f
        PUTS "  status "
        call print_hex32
        call newline
        FAIL "device_status is not 0x0f after DRIVER_OK"
8:      call read_num_pages
        movl %eax, num_pages
        cmpl $0, verbose
        je 9f
        PUTS "  DRIVER_OK; num_pages "
        call print_dec
        PUTS ", actual "
        movl devcfg, %esi
        movl CFG_ACTUAL(%esi), %eax
        call print_dec
        call newline
9:      movl num_pages, %eax
        cmpl held, %eax                 # towards_target
        je 10f
        call balloon_changed
10:     popal
        ret

# ---------------------------------------------------------------------------
# Queues (virtio_ring.c, split rings). ESI = queue record.
# ---------------------------------------------------------------------------

# q_add: EAX = chain head. avail->ring[avail % size] = head, then avail->idx
# (x86 keeps the stores in order), then virtqueue_kick.
q_add:
        pushal
        movl Q_RING(%esi), %ebx
        movl Q_SIZE(%esi), %ecx
        decl %ecx
        andl Q_AVAIL(%esi), %ecx
        movw %ax, R_AVAIL + 4(%ebx,%ecx,2)
        incl Q_AVAIL(%esi)
        movl Q_AVAIL(%esi), %eax
        movw %ax, R_AVAIL + 2(%ebx)
        # virtqueue_kick_prepare_split: with EVENT_IDX, vring_need_event(
        # avail_event, new, old) = (u16)(new - event - 1) < (u16)(new - old),
        # one buffer added (old = new - 1); else unless VRING_USED_F_NO_NOTIFY.
        testl $F_EVENT_IDX, drv_lo
        jz 1f
        movl %eax, %edx                 # new
        movl Q_SIZE(%esi), %ecx         # avail_event: after used->ring[size]
        movzwl R_USED + 4(%ebx,%ecx,8), %ecx
        subl %ecx, %edx
        decl %edx
        andl $0xffff, %edx
        cmpl $1, %edx
        jae 9f                          # not needed
        jmp 2f
1:      testw $1, R_USED(%ebx)
        jnz 9f
2:      movl Q_NOTIFY(%esi), %edx       # vp_notify: the queue index, 16 bits
        movl Q_INDEX(%esi), %eax
        movw %ax, (%edx)
        incl kicks
9:      popal
        ret

# q_has_used: ZF=0 when the device has used a buffer not yet taken.
q_has_used:
        pushl %eax
        pushl %ebx
        movl Q_RING(%esi), %ebx
        movzwl R_USED + 2(%ebx), %eax
        cmpw Q_LAST(%esi), %ax
        popl %ebx
        popl %eax
        ret

# q_get: virtqueue_get_buf: wait (bounded) for the next used element.
# EAX = its id, EDX = its length; with EVENT_IDX used_event = the new last
# used index (callbacks stay enabled, as Linux leaves them).
q_get:
        pushl %ebx
        pushl %ecx
        movl $POLL_BUDGET, %ecx
1:      call q_has_used
        jnz 2f
        decl %ecx
        jnz 1b
        FAIL "the device did not use a buffer"
2:      movl Q_RING(%esi), %ebx
        movl Q_SIZE(%esi), %ecx
        decl %ecx
        andl Q_LAST(%esi), %ecx
        movl R_USED + 4(%ebx,%ecx,8), %eax
        movl R_USED + 8(%ebx,%ecx,8), %edx
        incl Q_LAST(%esi)
        testl $F_EVENT_IDX, drv_lo
        jz 3f
        pushl %eax                      # used_event: after avail->ring[size]
        movl Q_SIZE(%esi), %ecx
        movl Q_LAST(%esi), %eax
        movw %ax, R_AVAIL + 4(%ebx,%ecx,2)
        popl %eax
3:      popl %ecx
        popl %ebx
        ret

# tell_host: ESI = queue record, ECX = PFNs at PFNS. One device-readable
# buffer (descriptor 0, the free list's head again each time), kick, wait.
tell_host:
        pushal
        movl Q_RING(%esi), %ebx
        movl $PFNS, R_DESC(%ebx)
        movl $0, R_DESC + 4(%ebx)
        shll $2, %ecx
        movl %ecx, R_DESC + 8(%ebx)
        movl $0, R_DESC + 12(%ebx)      # flags 0, next 0
        xorl %eax, %eax
        call q_add
        call q_get
        testl %eax, %eax
        jz 1f
        FAIL "a used element names a head we did not make available"
1:      popal
        ret

# ---------------------------------------------------------------------------
# Inflate and deflate.
# ---------------------------------------------------------------------------

# read_num_pages: EAX = num_pages, read between two equal config_generation
# reads (the device may change it at any time).
read_num_pages:
        pushl %ebx
        pushl %ecx
        pushl %esi
        pushl %edi
        movl common, %edi
        movl devcfg, %esi
        movl $1000, %ecx
1:      movzbl C_CFGGEN(%edi), %ebx
        movl CFG_NUM_PAGES(%esi), %eax
        cmpb C_CFGGEN(%edi), %bl
        je 2f
        decl %ecx
        jnz 1b
        FAIL "config_generation never settles"
2:      popl %edi
        popl %esi
        popl %ecx
        popl %ebx
        ret

# balloon_changed: update_balloon_size_func until num_pages is reached.
balloon_changed:
        pushal
        call read_num_pages
        movl %eax, num_pages
        PUTS "virtioballoon: config change: num_pages "
        call print_dec
        PUTS " (holding "
        movl held, %eax
        call print_dec
        PUTS ")\n"
1:      movl num_pages, %ecx
        subl held, %ecx                 # towards_target
        jz 9f
        js 3f
        cmpl $ARRAY_PFNS_MAX, %ecx
        jbe 2f
        movl $ARRAY_PFNS_MAX, %ecx
2:      call fill_balloon               # EAX = pages added
        testl %eax, %eax
        jnz 5f
        cmpl $0, out_of_puff
        jne 9f
        movl $1, out_of_puff
        PUTS "virtioballoon: out of puff: this guest has only 1024 pages to give\n"
        jmp 9f
3:      negl %ecx
        cmpl $ARRAY_PFNS_MAX, %ecx
        jbe 4f
        movl $ARRAY_PFNS_MAX, %ecx
4:      call leak_balloon
5:      call update_balloon_size
        call read_num_pages             # the work runs again: towards_target
        movl %eax, num_pages
        jmp 1b
9:      popal
        ret

# fill_balloon: ECX = pages wanted. EAX = pages given to the host: the next
# free ones of the balloon range, at most what is left of it.
fill_balloon:
        pushl %ecx
        pushl %edx
        pushl %esi
        movl $BALLOON_PAGES, %eax
        subl held, %eax
        cmpl %eax, %ecx
        jbe 1f
        movl %eax, %ecx
1:      movl %ecx, %eax
        testl %ecx, %ecx
        jz 9f
        xorl %edx, %edx
        movl held, %esi
        addl $(BALLOON_BASE >> 12), %esi
2:      movl %esi, PFNS(,%edx,4)
        incl %esi
        incl %edx
        cmpl %ecx, %edx
        jb 2b
        addl %ecx, held
        movl $qrecs, %esi               # inflate_vq
        call tell_host
        PUTS "  inflate: "
        call print_dec
        PUTS " PFNs, holding "
        pushl %eax
        movl held, %eax
        call print_dec
        popl %eax
        call newline
9:      popl %esi
        popl %edx
        popl %ecx
        ret

# leak_balloon: ECX = pages to give back (at most those held), the last
# ones taken first.
leak_balloon:
        pushal
        cmpl held, %ecx
        jbe 1f
        movl held, %ecx
1:      jecxz 9f
        xorl %edx, %edx
        movl held, %esi
        addl $((BALLOON_BASE >> 12) - 1), %esi
2:      movl %esi, PFNS(,%edx,4)
        decl %esi
        incl %edx
        cmpl %ecx, %edx
        jb 2b
        subl %ecx, held
        movl $qrecs + Q_REC, %esi       # deflate_vq
        call tell_host
        PUTS "  deflate: "
        movl %ecx, %eax
        call print_dec
        PUTS " PFNs, holding "
        movl held, %eax
        call print_dec
        call newline
9:      popal
        ret

# update_balloon_size: actual = the pages held (little-endian u32).
update_balloon_size:
        pushl %eax
        pushl %esi
        movl devcfg, %esi
        movl held, %eax
        movl %eax, CFG_ACTUAL(%esi)
        popl %esi
        popl %eax
        ret

# hostile_buffer: one inflate buffer no driver sends: the first page past
# RAM, a page of the 32-bit MMIO hole, PFN 0xffffffff and a page the
# balloon holds. The host must take it like any other.
hostile_buffer:
        pushal
        movl ram_top, %eax
        shrl $12, %eax
        movl %eax, PFNS
        movl $0xc0000, PFNS + 4
        movl $0xffffffff, PFNS + 8
        movl $(BALLOON_BASE >> 12), PFNS + 12
        movl $qrecs, %esi
        movl $4, %ecx
        call tell_host
        PUTS "virtioballoon: hostile inflate buffer (past RAM, MMIO hole, 0xffffffff, a held page) used\n"
        popal
        ret

# check_deflated: the deflated pages read as zero (the host dropped their
# memory when they were inflated) and take writes again.
check_deflated:
        pushl %edi
        movl $BALLOON_BASE, %edi
1:      cmpl $0, (%edi)
        je 2f
        FAIL "a deflated page still holds what the guest wrote before inflating it"
2:      movl $MARK, (%edi)
        cmpl $MARK, (%edi)
        je 3f
        FAIL "a deflated page does not keep a write"
3:      addl $0x11000, %edi             # a sample of 61 pages
        cmpl $BALLOON_BASE + BALLOON_PAGES * 4096, %edi
        jb 1b
        PUTS "virtioballoon: deflated to 0: the pages read as zero and take writes again\n"
        popl %edi
        ret

# ---------------------------------------------------------------------------
# Statistics.
# ---------------------------------------------------------------------------

# stats_fill: update_balloon_stats into STATSBUF.
stats_fill:
        pushal
        incl stats_sent
        movl $STATSBUF, %edi
        xorl %eax, %eax
        xorl %edx, %edx
        movl $0, %ebx                   # SWAP_IN
        call put_stat
        movl $1, %ebx                   # SWAP_OUT
        call put_stat
        movl $2, %ebx                   # MAJFLT
        call put_stat
        movl $3, %ebx                   # MINFLT: the buffers sent
        movl stats_sent, %eax
        call put_stat
        xorl %eax, %eax
        movl $8, %ebx                   # HTLB_PGALLOC
        call put_stat
        movl $9, %ebx                   # HTLB_PGFAIL
        call put_stat
        # free = RAM - GUEST_USED - ballooned; total = RAM (less the
        # balloon without DEFLATE_ON_OOM: adjust_managed_page_count).
        movl held, %ecx
        shll $12, %ecx
        movl totalram, %eax
        movl totalram + 4, %edx
        subl $GUEST_USED, %eax
        sbbl $0, %edx
        subl %ecx, %eax
        sbbl $0, %edx
        movl %eax, stat_free
        movl %edx, stat_free + 4
        movl $4, %ebx                   # MEMFREE
        call put_stat
        movl totalram, %eax
        movl totalram + 4, %edx
        testl $F_DEFLATE_ON_OOM, drv_lo
        jnz 1f
        subl %ecx, %eax
        sbbl $0, %edx
1:      movl $5, %ebx                   # MEMTOT
        call put_stat
        movl stat_free, %eax
        movl stat_free + 4, %edx
        addl $CACHES, %eax
        adcl $0, %edx
        movl $6, %ebx                   # AVAIL
        call put_stat
        movl $CACHES, %eax
        xorl %edx, %edx
        movl $7, %ebx                   # CACHES
        call put_stat
        popal
        ret

# put_stat: EBX = tag, EDX:EAX = value at EDI; EDI moves on.
put_stat:
        movw %bx, (%edi)
        movl %eax, 2(%edi)
        movl %edx, 6(%edi)
        addl $STAT_SIZE, %edi
        ret

# stats_add: ESI = stats queue record: the stats buffer (10 entries,
# device-readable, descriptor 0) added and kicked.
stats_add:
        pushal
        movl Q_RING(%esi), %ebx
        movl $STATSBUF, R_DESC(%ebx)
        movl $0, R_DESC + 4(%ebx)
        movl $(NUM_STATS * STAT_SIZE), R_DESC + 8(%ebx)
        movl $0, R_DESC + 12(%ebx)
        xorl %eax, %eax
        call q_add
        popal
        ret

# stats_handle_request: the host returned the buffer: take it, refill it,
# add it again.
stats_handle_request:
        pushal
        movl $qrecs + 2 * Q_REC, %esi
        call q_get
        testl %eax, %eax
        jz 1f
        FAIL "the stats queue returned a head we did not make available"
1:      incl stats_answers
        call stats_fill
        call stats_add
        PUTS "virtioballoon: stats request "
        movl stats_answers, %eax
        call print_dec
        PUTS " answered: free "
        movl stat_free, %eax
        movl stat_free + 4, %edx
        shrdl $10, %edx, %eax
        call print_dec
        PUTS " KiB, minor_faults "
        movl stats_sent, %eax
        call print_dec
        call newline
        popal
        ret

# ---------------------------------------------------------------------------
# The event loop: EAX = goal. Returns when it is met; FAILs after ~60 s.
# ---------------------------------------------------------------------------
event_loop:
        pushal
        movl %eax, %ebp
        movl stats_answers, %eax
        movl %eax, answers_mark
        xorl %edi, %edi                 # PM timer ticks waited
        movl $WAIT_POLLS, %esi
        call pm_read
        movl %eax, last_tick
1:      call poll_events
        cmpl $GOAL_INFLATED, %ebp
        jne 2f
        cmpl $TARGET_PAGES, held
        je 9f
        jmp 5f
2:      movl stats_answers, %eax
        cmpl answers_mark, %eax
        je 5f                           # no statistics request yet
        cmpl $GOAL_STATS, %ebp
        je 9f
        cmpl $0, held
        je 9f
5:      cmpl $0, pm_tmr
        je 6f
        call pm_read
        movl %eax, %ecx
        subl last_tick, %ecx
        andl $0xffffff, %ecx            # 24-bit timer; fine for 32-bit too
        addl %ecx, %edi
        movl %eax, last_tick
        cmpl $WAIT_TICKS, %edi
        jae 7f
6:      decl %esi
        jnz 1b
7:      PUTS "virtioballoon: gave up waiting: goal "
        movl %ebp, %eax
        call print_dec
        PUTS ", holding "
        movl held, %eax
        call print_dec
        PUTS ", num_pages "
        movl num_pages, %eax
        call print_dec
        PUTS ", stats requests "
        movl stats_answers, %eax
        call print_dec
        call newline
        FAIL "timed out waiting for the host (~60 s)"
9:      popal
        ret

# pm_read: EAX = the PM timer (0 without one).
pm_read:
        pushl %edx
        xorl %eax, %eax
        movl pm_tmr, %edx
        testl %edx, %edx
        jz 1f
        inl (%dx), %eax
1:      popl %edx
        ret

# poll_events: vp_interrupt's ISR read (configuration bit:
# virtballoon_changed) and the stats queue's used ring (stats_request).
poll_events:
        pushal
        movl isr, %esi
        movzbl (%esi), %eax
        testl $ISR_CONFIG, %eax
        jz 1f
        incl config_irqs
        call balloon_changed
1:      movl $qrecs + 2 * Q_REC, %esi
        call q_has_used
        jz 2f
        call stats_handle_request
2:      popal
        ret

# ---------------------------------------------------------------------------
# Free page reporting (virtballoon_free_page_report).
# ---------------------------------------------------------------------------
report_free:
        pushal
        movl $REPORT_A, %edi            # the blocks were in use: written
1:      movl $MARK, (%edi)
        addl $4096, %edi
        cmpl $REPORT_A + BLOCK, %edi
        jb 1b
        movl $REPORT_B, %edi
2:      movl $MARK, (%edi)
        addl $4096, %edi
        cmpl $REPORT_B + BLOCK, %edi
        jb 2b
        movl $qrecs + 3 * Q_REC, %esi
        movl Q_RING(%esi), %ebx
        testl $F_INDIRECT_DESC, drv_lo
        jz 3f
        # virtqueue_add_inbuf of 2 entries: one indirect descriptor.
        movl $INDIRECT, %edi
        movl $REPORT_A, 0(%edi)
        movl $0, 4(%edi)
        movl $BLOCK, 8(%edi)
        movw $(DESC_WRITE | DESC_NEXT), 12(%edi)
        movw $1, 14(%edi)
        movl $REPORT_B, 16(%edi)
        movl $0, 20(%edi)
        movl $BLOCK, 24(%edi)
        movw $DESC_WRITE, 28(%edi)
        movw $0, 30(%edi)
        movl $INDIRECT, R_DESC(%ebx)
        movl $0, R_DESC + 4(%ebx)
        movl $32, R_DESC + 8(%ebx)
        movw $DESC_INDIRECT, R_DESC + 12(%ebx)
        movw $0, R_DESC + 14(%ebx)
        jmp 4f
3:      movl $REPORT_A, R_DESC(%ebx)    # two chained descriptors
        movl $0, R_DESC + 4(%ebx)
        movl $BLOCK, R_DESC + 8(%ebx)
        movw $(DESC_WRITE | DESC_NEXT), R_DESC + 12(%ebx)
        movw $1, R_DESC + 14(%ebx)
        movl $REPORT_B, R_DESC + 16(%ebx)
        movl $0, R_DESC + 20(%ebx)
        movl $BLOCK, R_DESC + 24(%ebx)
        movw $DESC_WRITE, R_DESC + 28(%ebx)
        movw $0, R_DESC + 30(%ebx)
4:      xorl %eax, %eax
        call q_add
        call q_get
        testl %eax, %eax
        jz 5f
        FAIL "the reporting queue returned a head we did not make available"
5:      PUTS "virtioballoon: reported 2 free 2 MiB blocks in one device-writable sg list"
        testl $F_INDIRECT_DESC, drv_lo
        jz 6f
        PUTS " (indirect)"
6:      PUTS ": buffer returned, used length "
        movl %edx, %eax
        call print_dec
        call newline
        popal
        ret

# check_reported: the reported blocks read as zero: the host dropped them.
check_reported:
        pushl %eax
        pushl %ecx
        pushl %edi
        movl $REPORT_A, %eax
1:      movl %eax, %edi
2:      cmpl $0, (%edi)
        je 3f
        FAIL "a reported block still holds what the guest wrote"
3:      addl $0x21000, %edi             # a sample of 16 pages a block
        leal BLOCK(%eax), %ecx
        cmpl %ecx, %edi
        jb 2b
        cmpl $REPORT_B, %eax
        je 4f
        movl $REPORT_B, %eax
        jmp 1b
4:      PUTS "virtioballoon: the reported blocks read as zero\n"
        popl %edi
        popl %ecx
        popl %eax
        ret

# freeze_restore: virtballoon_freeze (remove_common: leak everything,
# update actual, reset) and virtballoon_restore (set-up again).
freeze_restore:
        pushal
1:      movl held, %ecx
        jecxz 2f
        cmpl $ARRAY_PFNS_MAX, %ecx
        jbe 3f
        movl $ARRAY_PFNS_MAX, %ecx
3:      call leak_balloon
        jmp 1b
2:      call update_balloon_size
        call device_reset
        call balloon_probe
        PUTS "virtioballoon: freeze/restore: reset and set up again, num_pages "
        movl num_pages, %eax
        call print_dec
        PUTS ", configuration interrupts seen "
        movl config_irqs, %eax
        call print_dec
        PUTS ", kicks "
        movl kicks, %eax
        call print_dec
        call newline
        popal
        ret

        .data
        .balign 8
totalram:       .quad 0
stat_free:      .quad 0
ram_top:        .long 0
verbose:        .long 0
held:           .long 0         # vb->num_pages
num_pages:      .long 0         # the last num_pages read
out_of_puff:    .long 0
stats_sent:     .long 0
stats_answers:  .long 0
answers_mark:   .long 0
config_irqs:    .long 0
kicks:          .long 0
last_tick:      .long 0
        .balign 32
qrecs:          .fill 4 * Q_REC, 1, 0   # inflate, deflate, stats, reporting
