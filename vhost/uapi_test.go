package vhost

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Where the expected values come from:
//
//   - "ref": the table in /work/shared/reference/guest-protocols.md §4.1.
//   - "gcc": a C program compiled on this workplace against the Debian
//     UAPI headers (package linux-libc-dev 6.1.187-1: /usr/include/linux/
//     vhost.h, vhost_types.h, if_tun.h, virtio_net.h, virtio_config.h,
//     virtio_ring.h, net/if.h), printing each macro and sizeof/offsetof:
//     gcc -o uapi uapi.c && ./uapi. Its output is copied below verbatim.
//   - "x/sys": golang.org/x/sys/unix v0.50.0 zerrors_linux_amd64.go, which
//     is generated from the kernel headers by its own tooling.
//   - "_IOC": the kernel's macro (include/uapi/asm-generic/ioctl.h)
//     re-implemented here independently of uapi.go: dir<<30 | size<<16 |
//     type<<8 | nr, with _IOW = 1, _IOR = 2.

func iocTest(dir, typ, nr, size uint32) uint32 { return dir<<30 | size<<16 | typ<<8 | nr }

func TestIoctlNumbers(t *testing.T) {
	const w, r, n = 1, 2, 0
	for _, tc := range []struct {
		name string
		got  uintptr
		ioc  uint32 // _IOC(dir, type, nr, size) from the header's declaration
		gcc  uint32 // gcc on the 6.1 headers
		ref  uint32 // guest-protocols.md §4.1; 0 where the table has no row
	}{
		{"VHOST_GET_FEATURES", ioctlVhostGetFeatures, iocTest(r, 0xAF, 0x00, 8), 0x8008af00, 0x8008AF00},
		{"VHOST_SET_FEATURES", ioctlVhostSetFeatures, iocTest(w, 0xAF, 0x00, 8), 0x4008af00, 0x4008AF00},
		{"VHOST_SET_OWNER", ioctlVhostSetOwner, iocTest(n, 0xAF, 0x01, 0), 0x0000af01, 0x0000AF01},
		{"VHOST_RESET_OWNER", ioctlVhostResetOwner, iocTest(n, 0xAF, 0x02, 0), 0x0000af02, 0x0000AF02},
		{"VHOST_SET_MEM_TABLE", ioctlVhostSetMemTable, iocTest(w, 0xAF, 0x03, 8), 0x4008af03, 0x4008AF03},
		{"VHOST_SET_VRING_NUM", ioctlVhostSetVringNum, iocTest(w, 0xAF, 0x10, 8), 0x4008af10, 0x4008AF10},
		{"VHOST_SET_VRING_ADDR", ioctlVhostSetVringAddr, iocTest(w, 0xAF, 0x11, 40), 0x4028af11, 0x4028AF11},
		{"VHOST_SET_VRING_BASE", ioctlVhostSetVringBase, iocTest(w, 0xAF, 0x12, 8), 0x4008af12, 0x4008AF12},
		{"VHOST_GET_VRING_BASE", ioctlVhostGetVringBase, iocTest(w|r, 0xAF, 0x12, 8), 0xc008af12, 0xC008AF12},
		{"VHOST_SET_VRING_KICK", ioctlVhostSetVringKick, iocTest(w, 0xAF, 0x20, 8), 0x4008af20, 0x4008AF20},
		{"VHOST_SET_VRING_CALL", ioctlVhostSetVringCall, iocTest(w, 0xAF, 0x21, 8), 0x4008af21, 0x4008AF21},
		{"VHOST_SET_VRING_ERR", ioctlVhostSetVringErr, iocTest(w, 0xAF, 0x22, 8), 0x4008af22, 0x4008AF22},
		{"VHOST_NET_SET_BACKEND", ioctlVhostNetSetBackend, iocTest(w, 0xAF, 0x30, 8), 0x4008af30, 0x4008AF30},
		{"TUNSETIFF", ioctlTunSetIff, iocTest(w, 'T', 202, 4), 0x400454ca, 0x400454CA},
		{"TUNGETIFF", ioctlTunGetIff, iocTest(r, 'T', 210, 4), 0x800454d2, 0},
		{"TUNGETFEATURES", ioctlTunGetFeatures, iocTest(r, 'T', 207, 4), 0x800454cf, 0x800454CF},
		{"TUNSETOFFLOAD", ioctlTunSetOffload, iocTest(w, 'T', 208, 4), 0x400454d0, 0x400454D0},
		{"TUNSETVNETHDRSZ", ioctlTunSetVnetHdrSz, iocTest(w, 'T', 216, 4), 0x400454d8, 0x400454D8},
		{"TUNGETVNETHDRSZ", ioctlTunGetVnetHdrSz, iocTest(r, 'T', 215, 4), 0x800454d7, 0},
		{"TUNSETQUEUE", ioctlTunSetQueue, iocTest(w, 'T', 217, 4), 0x400454d9, 0x400454D9},
	} {
		if uint32(tc.got) != tc.ioc || uint32(tc.got) != tc.gcc || (tc.ref != 0 && uint32(tc.got) != tc.ref) {
			t.Errorf("%s = %#x; _IOC %#x, gcc %#x, reference %#x", tc.name, tc.got, tc.ioc, tc.gcc, tc.ref)
		}
		if tc.name != ioctlName(tc.got) && tc.name[:5] == "VHOST" {
			t.Errorf("ioctlName(%#x) = %s, want %s", tc.got, ioctlName(tc.got), tc.name)
		}
	}
	// x/sys carries the tun ones.
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"TUNSETIFF", ioctlTunSetIff, unix.TUNSETIFF},
		{"TUNGETIFF", ioctlTunGetIff, unix.TUNGETIFF},
		{"TUNGETFEATURES", ioctlTunGetFeatures, unix.TUNGETFEATURES},
		{"TUNSETOFFLOAD", ioctlTunSetOffload, unix.TUNSETOFFLOAD},
		{"TUNSETVNETHDRSZ", ioctlTunSetVnetHdrSz, unix.TUNSETVNETHDRSZ},
		{"TUNGETVNETHDRSZ", ioctlTunGetVnetHdrSz, unix.TUNGETVNETHDRSZ},
		{"TUNSETQUEUE", ioctlTunSetQueue, unix.TUNSETQUEUE},
		{"SIOCGIFHWADDR", ioctlSiocGIfHwAddr, unix.SIOCGIFHWADDR},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, x/sys says %#x", tc.name, tc.got, tc.want)
		}
	}
}

func TestStructLayouts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr // want from gcc (sizeof/offsetof) on the 6.1 headers
	}{
		{"sizeof(struct vhost_memory) (header)", unsafe.Sizeof(vhostMemoryHeader{}), 8},
		{"offsetof(vhost_memory, regions)", unsafe.Offsetof(vhostMemory{}.Regions), 8},
		{"sizeof(struct vhost_memory_region)", unsafe.Sizeof(vhostMemoryRegion{}), 32},
		{"offsetof(vhost_memory_region, guest_phys_addr)", unsafe.Offsetof(vhostMemoryRegion{}.GuestPhysAddr), 0},
		{"offsetof(vhost_memory_region, memory_size)", unsafe.Offsetof(vhostMemoryRegion{}.MemorySize), 8},
		{"offsetof(vhost_memory_region, userspace_addr)", unsafe.Offsetof(vhostMemoryRegion{}.UserspaceAddr), 16},
		{"offsetof(vhost_memory_region, flags_padding)", unsafe.Offsetof(vhostMemoryRegion{}.FlagsPadding), 24},
		{"sizeof(struct vhost_vring_addr)", unsafe.Sizeof(vhostVringAddr{}), 40},
		{"offsetof(vhost_vring_addr, index)", unsafe.Offsetof(vhostVringAddr{}.Index), 0},
		{"offsetof(vhost_vring_addr, flags)", unsafe.Offsetof(vhostVringAddr{}.Flags), 4},
		{"offsetof(vhost_vring_addr, desc_user_addr)", unsafe.Offsetof(vhostVringAddr{}.DescUserAddr), 8},
		{"offsetof(vhost_vring_addr, used_user_addr)", unsafe.Offsetof(vhostVringAddr{}.UsedUserAddr), 16},
		{"offsetof(vhost_vring_addr, avail_user_addr)", unsafe.Offsetof(vhostVringAddr{}.AvailUserAddr), 24},
		{"offsetof(vhost_vring_addr, log_guest_addr)", unsafe.Offsetof(vhostVringAddr{}.LogGuestAddr), 32},
		{"sizeof(struct vhost_vring_state)", unsafe.Sizeof(vhostVringState{}), 8},
		{"offsetof(vhost_vring_state, num)", unsafe.Offsetof(vhostVringState{}.Num), 4},
		{"sizeof(struct vhost_vring_file)", unsafe.Sizeof(vhostVringFile{}), 8},
		{"offsetof(vhost_vring_file, fd)", unsafe.Offsetof(vhostVringFile{}.FD), 4},
		{"sizeof(struct ifreq)", unsafe.Sizeof(ifreq{}), 40},
		{"offsetof(ifreq, ifr_flags)", unsafe.Offsetof(ifreq{}.Flags), 16},
		// ifr_hwaddr is at 16 too; its sa_data (the MAC) follows the
		// 2-byte sa_family, at 18 = offsetof(Data).
		{"offsetof(ifreq, ifr_hwaddr.sa_data)", unsafe.Offsetof(ifreq{}.Data), 18},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	// The kernel reads regions right after the header: the array must
	// start where the C flexible array member does.
	var m vhostMemory
	if uintptr(unsafe.Pointer(&m.Regions[0]))-uintptr(unsafe.Pointer(&m)) != 8 {
		t.Error("vhostMemory regions not at offset 8")
	}
}

func TestUAPIConstants(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uint64 // want: gcc on the 6.1 headers (and x/sys where it has them)
	}{
		{"IFF_TAP", iffTap, unix.IFF_TAP},
		{"IFF_NO_PI", iffNoPI, unix.IFF_NO_PI},
		{"IFF_VNET_HDR", iffVnetHdr, unix.IFF_VNET_HDR},
		{"IFF_MULTI_QUEUE", iffMultiQueue, unix.IFF_MULTI_QUEUE},
		{"IFF_ATTACH_QUEUE", iffAttachQueue, unix.IFF_ATTACH_QUEUE},
		{"IFF_DETACH_QUEUE", iffDetachQueue, unix.IFF_DETACH_QUEUE},
		{"TUN_F_CSUM", TunFCsum, unix.TUN_F_CSUM},
		{"TUN_F_TSO4", TunFTSO4, unix.TUN_F_TSO4},
		{"TUN_F_TSO6", TunFTSO6, unix.TUN_F_TSO6},
		{"TUN_F_TSO_ECN", TunFTSOECN, unix.TUN_F_TSO_ECN},
		{"TUN_F_UFO", TunFUFO, unix.TUN_F_UFO},
		{"VIRTIO_NET_F_CSUM", FeatureNetCsum, 0},
		{"VIRTIO_NET_F_GUEST_CSUM", FeatureNetGuestCsum, 1},
		{"VIRTIO_NET_F_GUEST_TSO4", FeatureNetGuestTSO4, 7},
		{"VIRTIO_NET_F_GUEST_TSO6", FeatureNetGuestTSO6, 8},
		{"VIRTIO_NET_F_GUEST_ECN", FeatureNetGuestECN, 9},
		{"VIRTIO_NET_F_GUEST_UFO", FeatureNetGuestUFO, 10},
		{"VIRTIO_NET_F_MRG_RXBUF", FeatureNetMrgRxbuf, 15},
		{"VIRTIO_F_NOTIFY_ON_EMPTY", FeatureNotifyOnEmpty, 24},
		{"VHOST_F_LOG_ALL", FeatureLogAll, 26},
		{"VIRTIO_F_ANY_LAYOUT", FeatureAnyLayout, 27},
		{"VHOST_NET_F_VIRTIO_NET_HDR", FeatureAnyLayout, 27},
		{"VIRTIO_RING_F_INDIRECT_DESC", FeatureIndirectDesc, 28},
		{"VIRTIO_RING_F_EVENT_IDX", FeatureEventIdx, 29},
		{"VIRTIO_F_VERSION_1", FeatureVersion1, 32},
		{"VIRTIO_F_ACCESS_PLATFORM", FeatureAccessPlatform, 33},
		{"VIRTIO_NET_HDR_F_NEEDS_CSUM", VnetHdrFNeedsCsum, 1},
		{"VIRTIO_NET_HDR_F_DATA_VALID", VnetHdrFDataValid, 2},
		{"VIRTIO_NET_HDR_GSO_TCPV4", VnetHdrGSOTCPv4, 1},
		{"VIRTIO_NET_HDR_GSO_UDP", VnetHdrGSOUDP, 3},
		{"VIRTIO_NET_HDR_GSO_TCPV6", VnetHdrGSOTCPv6, 4},
		{"VIRTIO_NET_HDR_GSO_ECN", VnetHdrGSOECN, 0x80},
		{"sizeof(struct virtio_net_hdr_mrg_rxbuf)", TapVnetHdrLen, 12},
		{"PACKET_VNET_HDR", unix.PACKET_VNET_HDR, 15},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
	// §4.2's mask: VERSION_1|MRG_RXBUF|EVENT_IDX|INDIRECT_DESC|NOTIFY_ON_EMPTY.
	if PassthroughFeatures != 0x1_3100_8000 {
		t.Errorf("PassthroughFeatures = %#x, want 0x131008000", uint64(PassthroughFeatures))
	}
}

func TestIfreq(t *testing.T) {
	r := newIfreq("a-very-long-interface-name", iffTap|iffNoPI)
	if r.name() != "a-very-long-int" || r.Name[15] != 0 {
		t.Errorf("name %q: must be cut to 15 bytes and NUL-terminated", r.name())
	}
	if r.Flags != iffTap|iffNoPI {
		t.Errorf("flags %#x", r.Flags)
	}
	copy(r.Data[:], []byte{1, 2, 3, 4, 5, 6, 7})
	if got := r.hwAddr(); len(got) != 6 || got[5] != 6 {
		t.Errorf("hwAddr %v", got)
	}
}
