package balloon

import "strconv"

// The virtio memory balloon's interface (virtio 1.2 §5.5; Linux
// include/uapi/linux/virtio_balloon.h, drivers/virtio/virtio_balloon.c
// v6.1, which this device is written against).

// Feature bits (spec §5.5.3).
const (
	// FeatureMustTellHost: the driver must tell the host before it reuses
	// a deflated page. Not offered (QEMU does not either): the ledger
	// does not care whether the guest touches a page before or after the
	// deflate request, since the host backs it again on touch.
	FeatureMustTellHost = 1 << 0
	// FeatureStatsVQ: the statistics queue exists.
	FeatureStatsVQ = 1 << 1
	// FeatureDeflateOnOOM: the guest deflates by itself when it runs out
	// of memory (Linux's OOM notifier, 256 pages at a time) and does not
	// take ballooned pages out of its managed count. The device only has
	// to account what it deflates.
	FeatureDeflateOnOOM = 1 << 2
	// FeatureFreePageHint (live-migration hints) and FeaturePagePoison
	// are not offered: kvmm does not migrate, and without PAGE_POISON a
	// Linux guest that poisons free pages turns free page reporting off
	// by itself (virtballoon_validate), which is the safe outcome since a
	// reported page reads back as zero.
	FeatureFreePageHint = 1 << 3
	FeaturePagePoison   = 1 << 4
	// FeatureReporting: free page reporting (the reporting queue).
	FeatureReporting = 1 << 5
)

// Queue roles. Linux v6.1 numbers the queues it creates consecutively,
// skipping those whose feature is not negotiated (virtio_find_vqs leaves no
// index for a NULL name), so the statistics queue is 2 and the reporting
// queue is 3 with both features, and the reporting queue is 2 without
// STATS_VQ. QEMU builds its queues in the same order (inflate, deflate,
// stats, [free page], reporting). Activate assigns roles the same way.
const (
	queueInflate = iota
	queueDeflate
	// maxQueues: inflate, deflate, stats, reporting.
	maxQueues = 4
)

// Queue sizes, QEMU's: 128 for inflate, deflate and stats (one buffer at a
// time is all Linux uses), 32 for the fourth queue, the reporting queue
// with both optional features: page_reporting sends at most
// PAGE_REPORTING_CAPACITY (32) ranges at a time, and Linux refuses a
// smaller reporting queue.
const (
	QueueSize          = 128
	ReportingQueueSize = 32
)

// The device configuration (struct virtio_balloon_config). Only the first
// two fields exist without FREE_PAGE_HINT and PAGE_POISON, as in QEMU's
// virtio_balloon_config_size. Unlike other devices' configuration, it is
// little-endian even for legacy drivers.
const (
	// ConfigNumPages is num_pages: the target in 4 KiB pages, written by
	// the device.
	ConfigNumPages = 0
	// ConfigActual is actual: the pages the driver holds, written by the
	// driver after each inflate or deflate round.
	ConfigActual = 4
	configSize   = 8
)

// PFNShift is VIRTIO_BALLOON_PFN_SHIFT: the queues carry 32-bit page frame
// numbers of 4 KiB pages whatever the guest's own page size.
const PFNShift = 12

// Statistics tags (spec §5.5.6.3, virtio 1.3 for 10 and up). Each entry of
// a statistics buffer is struct virtio_balloon_stat { le16 tag; le64 val; }
// packed: 10 bytes.
const (
	StatSwapIn        = 0
	StatSwapOut       = 1
	StatMajorFaults   = 2
	StatMinorFaults   = 3
	StatFreeMemory    = 4
	StatTotalMemory   = 5
	StatAvailMemory   = 6
	StatDiskCaches    = 7
	StatHugetlbAlloc  = 8
	StatHugetlbFail   = 9
	StatOOMKills      = 10
	StatAllocStalls   = 11
	StatAsyncScans    = 12
	StatDirectScans   = 13
	StatAsyncReclaims = 14
	StatDirectReclaim = 15
	numKnownStats     = 16

	// StatEntrySize is sizeof(struct virtio_balloon_stat).
	StatEntrySize = 10
)

// statNames names the tags in GuestStats.Values: the spec's meanings, in
// the words the API uses (bytes for memory amounts, counts for events).
var statNames = [numKnownStats]string{
	StatSwapIn:        "swap_in",
	StatSwapOut:       "swap_out",
	StatMajorFaults:   "major_faults",
	StatMinorFaults:   "minor_faults",
	StatFreeMemory:    "free_memory",
	StatTotalMemory:   "total_memory",
	StatAvailMemory:   "available_memory",
	StatDiskCaches:    "disk_caches",
	StatHugetlbAlloc:  "hugetlb_allocations",
	StatHugetlbFail:   "hugetlb_failures",
	StatOOMKills:      "oom_kills",
	StatAllocStalls:   "alloc_stalls",
	StatAsyncScans:    "async_scans",
	StatDirectScans:   "direct_scans",
	StatAsyncReclaims: "async_reclaims",
	StatDirectReclaim: "direct_reclaims",
}

// StatName is the name a tag's value is reported under: the spec's name
// for the known tags, "tag_N" for the others.
func StatName(tag uint16) string {
	if int(tag) < len(statNames) {
		return statNames[tag]
	}
	return "tag_" + strconv.FormatUint(uint64(tag), 10)
}
