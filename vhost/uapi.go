package vhost

import "unsafe"

// Kernel UAPI of vhost-net and tun/tap for x86-64. The values are spelled
// out (not taken from golang.org/x/sys/unix, which lacks the vhost ones) and
// uapi_test.go checks every one of them against _IOC arithmetic, the table
// in guest-protocols.md §4.1 and the values gcc computed from the 6.1 UAPI
// headers (include/uapi/linux/vhost.h, vhost_types.h, if_tun.h).

// ioctl direction bits and field shifts (include/uapi/asm-generic/ioctl.h).
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	iocTypeShift = 8 // the number (nr) is the low byte, unshifted
	iocSizeShift = 16
	iocDirShift  = 30
)

// vhostVirtio is the ioctl type byte of every vhost ioctl (VHOST_VIRTIO).
const vhostVirtio = 0xAF

// vhost ioctls (include/uapi/linux/vhost.h), each spelled as the kernel's
// _IOC(dir, type, nr, size) so the size always follows the Go struct.
const (
	ioctlVhostGetFeatures   = iocRead<<iocDirShift | 8<<iocSizeShift | vhostVirtio<<iocTypeShift  // nr 0x00
	ioctlVhostSetFeatures   = iocWrite<<iocDirShift | 8<<iocSizeShift | vhostVirtio<<iocTypeShift // nr 0x00
	ioctlVhostSetOwner      = iocNone<<iocDirShift | vhostVirtio<<iocTypeShift | 0x01
	ioctlVhostResetOwner    = iocNone<<iocDirShift | vhostVirtio<<iocTypeShift | 0x02
	ioctlVhostSetMemTable   = iocWrite<<iocDirShift | unsafe.Sizeof(vhostMemoryHeader{})<<iocSizeShift | vhostVirtio<<iocTypeShift | 0x03
	ioctlVhostSetVringNum   = iocWrite<<iocDirShift | unsafe.Sizeof(vhostVringState{})<<iocSizeShift | vhostVirtio<<iocTypeShift | 0x10
	ioctlVhostSetVringAddr  = iocWrite<<iocDirShift | unsafe.Sizeof(vhostVringAddr{})<<iocSizeShift | vhostVirtio<<iocTypeShift | 0x11
	ioctlVhostSetVringBase  = iocWrite<<iocDirShift | unsafe.Sizeof(vhostVringState{})<<iocSizeShift | vhostVirtio<<iocTypeShift | 0x12
	ioctlVhostGetVringBase  = (iocRead|iocWrite)<<iocDirShift | unsafe.Sizeof(vhostVringState{})<<iocSizeShift | vhostVirtio<<iocTypeShift | 0x12
	ioctlVhostSetVringKick  = iocWrite<<iocDirShift | unsafe.Sizeof(vhostVringFile{})<<iocSizeShift | vhostVirtio<<iocTypeShift | 0x20
	ioctlVhostSetVringCall  = iocWrite<<iocDirShift | unsafe.Sizeof(vhostVringFile{})<<iocSizeShift | vhostVirtio<<iocTypeShift | 0x21
	ioctlVhostSetVringErr   = iocWrite<<iocDirShift | unsafe.Sizeof(vhostVringFile{})<<iocSizeShift | vhostVirtio<<iocTypeShift | 0x22
	ioctlVhostNetSetBackend = iocWrite<<iocDirShift | unsafe.Sizeof(vhostVringFile{})<<iocSizeShift | vhostVirtio<<iocTypeShift | 0x30
)

// ioctlName names a vhost ioctl for errors and logs; the names are the
// kernel's, so an error message can be grepped for in the kernel source.
func ioctlName(req uintptr) string {
	switch req {
	case ioctlVhostGetFeatures:
		return "VHOST_GET_FEATURES"
	case ioctlVhostSetFeatures:
		return "VHOST_SET_FEATURES"
	case ioctlVhostSetOwner:
		return "VHOST_SET_OWNER"
	case ioctlVhostResetOwner:
		return "VHOST_RESET_OWNER"
	case ioctlVhostSetMemTable:
		return "VHOST_SET_MEM_TABLE"
	case ioctlVhostSetVringNum:
		return "VHOST_SET_VRING_NUM"
	case ioctlVhostSetVringAddr:
		return "VHOST_SET_VRING_ADDR"
	case ioctlVhostSetVringBase:
		return "VHOST_SET_VRING_BASE"
	case ioctlVhostGetVringBase:
		return "VHOST_GET_VRING_BASE"
	case ioctlVhostSetVringKick:
		return "VHOST_SET_VRING_KICK"
	case ioctlVhostSetVringCall:
		return "VHOST_SET_VRING_CALL"
	case ioctlVhostSetVringErr:
		return "VHOST_SET_VRING_ERR"
	case ioctlVhostNetSetBackend:
		return "VHOST_NET_SET_BACKEND"
	}
	return "unknown vhost ioctl"
}

// struct vhost_memory_region: one guest RAM region as the vhost worker sees
// it; UserspaceAddr is the host virtual address in this process.
type vhostMemoryRegion struct {
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
	FlagsPadding  uint64
}

// struct vhost_memory without its flexible array of regions; the ioctl
// number encodes only this header's size.
type vhostMemoryHeader struct {
	NRegions uint32
	Padding  uint32
}

// maxMemRegions is vhost's default max_mem_regions module parameter: more
// regions make VHOST_SET_MEM_TABLE fail with E2BIG.
const maxMemRegions = 64

// vhostMemory is struct vhost_memory with room for maxMemRegions regions;
// the kernel reads only NRegions of them.
type vhostMemory struct {
	vhostMemoryHeader
	Regions [maxMemRegions]vhostMemoryRegion
}

// struct vhost_vring_state: ring index and a number (size or avail index).
type vhostVringState struct {
	Index uint32
	Num   uint32
}

// struct vhost_vring_file: ring index and an fd (eventfd, or the backend
// socket for VHOST_NET_SET_BACKEND); -1 unbinds.
type vhostVringFile struct {
	Index uint32
	FD    int32
}

// struct vhost_vring_addr: the ring's parts as host virtual addresses, and
// the used ring's guest-physical address for dirty logging.
type vhostVringAddr struct {
	Index         uint32
	Flags         uint32
	DescUserAddr  uint64
	UsedUserAddr  uint64
	AvailUserAddr uint64
	LogGuestAddr  uint64
}

// vhost-net ring indices within one queue pair (drivers/vhost/net.c:
// VHOST_NET_VQ_RX, VHOST_NET_VQ_TX); virtio-net's receiveqN/transmitqN.
const (
	vqRX = 0
	vqTX = 1
)

// Feature bits (include/uapi/linux/virtio_config.h, virtio_ring.h,
// virtio_net.h, vhost.h).
const (
	FeatureNetCsum       = 0  // VIRTIO_NET_F_CSUM: device handles partial checksums
	FeatureNetGuestCsum  = 1  // VIRTIO_NET_F_GUEST_CSUM: driver handles partial checksums
	FeatureNetGuestTSO4  = 7  // VIRTIO_NET_F_GUEST_TSO4
	FeatureNetGuestTSO6  = 8  // VIRTIO_NET_F_GUEST_TSO6
	FeatureNetGuestECN   = 9  // VIRTIO_NET_F_GUEST_ECN
	FeatureNetGuestUFO   = 10 // VIRTIO_NET_F_GUEST_UFO
	FeatureNetMrgRxbuf   = 15 // VIRTIO_NET_F_MRG_RXBUF
	FeatureNotifyOnEmpty = 24 // VIRTIO_F_NOTIFY_ON_EMPTY
	FeatureLogAll        = 26 // VHOST_F_LOG_ALL
	// FeatureAnyLayout is VIRTIO_F_ANY_LAYOUT and, for vhost-net,
	// VHOST_NET_F_VIRTIO_NET_HDR: "vhost adds and strips the vnet header".
	FeatureAnyLayout      = 27
	FeatureIndirectDesc   = 28 // VIRTIO_RING_F_INDIRECT_DESC
	FeatureEventIdx       = 29 // VIRTIO_RING_F_EVENT_IDX
	FeatureVersion1       = 32 // VIRTIO_F_VERSION_1
	FeatureAccessPlatform = 33 // VIRTIO_F_ACCESS_PLATFORM
)

// tun/tap ioctls (include/uapi/linux/if_tun.h, type 'T'; the argument size
// in the number is sizeof(int) or sizeof(unsigned int) for all of them, even
// those that take a struct ifreq pointer, because that is how if_tun.h
// declares them).
const (
	tunType              = 'T'
	ioctlTunSetIff       = iocWrite<<iocDirShift | 4<<iocSizeShift | tunType<<iocTypeShift | 202
	ioctlTunGetFeatures  = iocRead<<iocDirShift | 4<<iocSizeShift | tunType<<iocTypeShift | 207
	ioctlTunSetOffload   = iocWrite<<iocDirShift | 4<<iocSizeShift | tunType<<iocTypeShift | 208
	ioctlTunGetIff       = iocRead<<iocDirShift | 4<<iocSizeShift | tunType<<iocTypeShift | 210
	ioctlTunGetVnetHdrSz = iocRead<<iocDirShift | 4<<iocSizeShift | tunType<<iocTypeShift | 215
	ioctlTunSetVnetHdrSz = iocWrite<<iocDirShift | 4<<iocSizeShift | tunType<<iocTypeShift | 216
	ioctlTunSetQueue     = iocWrite<<iocDirShift | 4<<iocSizeShift | tunType<<iocTypeShift | 217
	// SIOCGIFHWADDR (include/uapi/linux/sockios.h) reads a macvtap's MAC
	// through its character device fd.
	ioctlSiocGIfHwAddr = 0x8927
)

// TUNSETIFF / TUNGETFEATURES flags (if_tun.h).
const (
	iffTap         = 0x0002
	iffNoPI        = 0x1000
	iffVnetHdr     = 0x4000
	iffMultiQueue  = 0x0100
	iffAttachQueue = 0x0200
	iffDetachQueue = 0x0400
)

// TUNSETOFFLOAD flags (if_tun.h): the offloads the reader of the tap fd
// (the guest) can take.
const (
	TunFCsum   = 0x01 // TUN_F_CSUM: partial checksums
	TunFTSO4   = 0x02 // TUN_F_TSO4
	TunFTSO6   = 0x04 // TUN_F_TSO6
	TunFTSOECN = 0x08 // TUN_F_TSO_ECN
	TunFUFO    = 0x10 // TUN_F_UFO
)

// ifreq is struct ifreq as the tun ioctls use it: the name, then the union
// whose first two bytes are ifr_flags (short) or, for SIOCGIFHWADDR,
// ifr_hwaddr.sa_family followed by the MAC in sa_data.
type ifreq struct {
	Name  [16]byte
	Flags uint16
	Data  [22]byte
}

func newIfreq(name string, flags uint16) ifreq {
	var r ifreq
	copy(r.Name[:len(r.Name)-1], name)
	r.Flags = flags
	return r
}

func (r *ifreq) name() string {
	for i, c := range r.Name {
		if c == 0 {
			return string(r.Name[:i])
		}
	}
	return string(r.Name[:])
}

// hwAddr returns ifr_hwaddr.sa_data[0:6] after SIOCGIFHWADDR.
func (r *ifreq) hwAddr() []byte { return append([]byte(nil), r.Data[:6]...) }
