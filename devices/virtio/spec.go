package virtio

// Constants of the virtio 1.x specification (OASIS virtio v1.2, cited as
// "spec §N"); names follow Linux's include/uapi/linux/virtio_*.h.

// DeviceType is the virtio device ID (spec §5). The PCI device ID of a
// modern (non-transitional) function is 0x1040 + type.
type DeviceType uint16

// Device types kvmm implements or plans.
const (
	TypeNet     DeviceType = 1
	TypeBlock   DeviceType = 2
	TypeConsole DeviceType = 3
	TypeRNG     DeviceType = 4
	TypeBalloon DeviceType = 5
)

func (t DeviceType) String() string {
	switch t {
	case TypeNet:
		return "net"
	case TypeBlock:
		return "blk"
	case TypeConsole:
		return "console"
	case TypeRNG:
		return "rng"
	case TypeBalloon:
		return "balloon"
	}
	return "type" + itoa(uint64(t))
}

// Device status bits (spec §2.1).
const (
	StatusAcknowledge = 1
	StatusDriver      = 2
	StatusDriverOK    = 4
	StatusFeaturesOK  = 8
	// StatusNeedsReset is set by the device alone: it hit an error it
	// cannot recover from until the driver resets it.
	StatusNeedsReset = 64
	StatusFailed     = 128
	// statusDriverBits are the bits a driver may set.
	statusDriverBits = StatusAcknowledge | StatusDriver | StatusDriverOK | StatusFeaturesOK | StatusFailed
)

// Feature bits every device type shares (spec §6). Device-specific bits
// are 0-23 (and 50+ for some types).
const (
	FeatureNotifyOnEmpty  = 1 << 24 // legacy only; never offered here
	FeatureAnyLayout      = 1 << 27 // legacy only; implied by VERSION_1
	FeatureIndirectDesc   = 1 << 28
	FeatureEventIdx       = 1 << 29
	FeatureVersion1       = 1 << 32
	FeatureAccessPlatform = 1 << 33
	FeatureRingPacked     = 1 << 34
	FeatureRingReset      = 1 << 40
)

// RingFeatures are the split-ring features this package implements; a
// device model offers them unless its backend (vhost) cannot honour them.
const RingFeatures = FeatureVersion1 | FeatureIndirectDesc | FeatureEventIdx

// Descriptor flags (spec §2.7.5).
const (
	DescFNext     = 1
	DescFWrite    = 2
	DescFIndirect = 4
)

// Ring flags (spec §2.7.6, §2.7.8).
const (
	// AvailFNoInterrupt: the driver does not want used-buffer
	// notifications (ignored when EVENT_IDX is negotiated).
	AvailFNoInterrupt = 1
	// UsedFNoNotify: the device does not want available-buffer
	// notifications (ignored when EVENT_IDX is negotiated).
	UsedFNoNotify = 1
)

// Split ring sizes in bytes (spec §2.7).
const (
	descSize      = 16 // struct virtq_desc
	usedElemSize  = 8  // struct virtq_used_elem
	ringHeader    = 4  // flags + idx of the avail and used rings
	eventFieldLen = 2  // used_event / avail_event
	// MaxQueueSize is the largest split ring the spec allows (2^15).
	MaxQueueSize = 32768
	// MaxIndirectDescs bounds an indirect table, as QEMU and vhost do
	// (VIRTQUEUE_MAX_SIZE, UIO_MAXIOV): the spec sets no limit, and an
	// unbounded table would let a guest make one request arbitrarily
	// expensive.
	MaxIndirectDescs = 1024
)

// NoVector is the MSI-X vector value that means "no interrupt" (spec
// §4.1.5.1.2, VIRTIO_MSI_NO_VECTOR).
const NoVector = 0xFFFF

// ISR status bits (spec §4.1.4.5).
const (
	ISRQueue  = 1
	ISRConfig = 2
)

// virtio-pci capability types (cfg_type of struct virtio_pci_cap, spec
// §4.1.4).
const (
	PCICapCommonCfg = 1
	PCICapNotifyCfg = 2
	PCICapISRCfg    = 3
	PCICapDeviceCfg = 4
	PCICapPCICfg    = 5
)

// struct virtio_pci_common_cfg offsets (spec §4.1.4.3).
const (
	CommonDeviceFeatureSelect = 0x00
	CommonDeviceFeature       = 0x04
	CommonDriverFeatureSelect = 0x08
	CommonDriverFeature       = 0x0C
	CommonConfigMSIXVector    = 0x10
	CommonNumQueues           = 0x12
	CommonDeviceStatus        = 0x14
	CommonConfigGeneration    = 0x15
	CommonQueueSelect         = 0x16
	CommonQueueSize           = 0x18
	CommonQueueMSIXVector     = 0x1A
	CommonQueueEnable         = 0x1C
	CommonQueueNotifyOff      = 0x1E
	CommonQueueDesc           = 0x20
	CommonQueueDriver         = 0x28
	CommonQueueDevice         = 0x30
	// CommonQueueNotifyData (virtio 1.2) reads as the queue index, which
	// is what a driver using VIRTIO_F_NOTIF_CONFIG_DATA would write; that
	// feature is not offered, so drivers ignore it.
	CommonQueueNotifyData = 0x38
	// CommonCfgLen is the structure's length as the capability
	// advertises it (through queue_notify_data).
	CommonCfgLen = 0x3A
)

// PCI identity of modern virtio functions (spec §4.1.2).
const (
	PCIVendorID = 0x1AF4
	// PCIDeviceIDBase + type is a non-transitional function's device ID.
	PCIDeviceIDBase = 0x1040
	// PCIRevision: non-transitional devices have revision 1 or higher.
	PCIRevision = 1
)

func itoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}
