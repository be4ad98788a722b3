package net

import "github.com/kvmm/kvmm/vhost"

// Constants of the virtio-net device (virtio v1.2 §5.1, cited as "spec
// §5.1.x"; names follow Linux's include/uapi/linux/virtio_net.h).

// Device feature bits (spec §5.1.3), as masks.
const (
	FeatureCsum              = 1 << 0  // device handles packets with partial checksums (guest transmit)
	FeatureGuestCsum         = 1 << 1  // driver handles packets with partial checksums (guest receive)
	FeatureCtrlGuestOffloads = 1 << 2  // GUEST_OFFLOADS_SET on the control queue
	FeatureMAC               = 1 << 5  // config.mac is valid
	FeatureGuestTSO4         = 1 << 7  // driver receives TSOv4
	FeatureGuestTSO6         = 1 << 8  // driver receives TSOv6
	FeatureGuestECN          = 1 << 9  // driver receives TSO with ECN
	FeatureGuestUFO          = 1 << 10 // driver receives UFO
	FeatureHostTSO4          = 1 << 11 // device takes TSOv4
	FeatureHostTSO6          = 1 << 12 // device takes TSOv6
	FeatureHostECN           = 1 << 13 // device takes TSO with ECN
	FeatureHostUFO           = 1 << 14 // device takes UFO
	FeatureMrgRxbuf          = 1 << 15 // driver can merge receive buffers
	FeatureStatus            = 1 << 16 // config.status is valid
	FeatureCtrlVQ            = 1 << 17 // control channel available
	FeatureMQ                = 1 << 22 // several rx/tx queue pairs (needs CTRL_VQ)
)

// guestOffloads are the features GUEST_OFFLOADS_SET may turn on and off:
// what the tap may hand the guest (TUNSETOFFLOAD).
const guestOffloads = FeatureGuestCsum | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN | FeatureGuestUFO

// featureDeps lists, for each feature, features that must be negotiated
// with it (spec §5.1.3.1): a driver that acks one without the others gets
// FEATURES_OK refused.
var featureDeps = []struct {
	feature, needs uint64
	anyOf          bool // needs one of the bits, not all
}{
	{FeatureGuestTSO4, FeatureGuestCsum, false},
	{FeatureGuestTSO6, FeatureGuestCsum, false},
	{FeatureGuestECN, FeatureGuestTSO4 | FeatureGuestTSO6, true},
	{FeatureGuestUFO, FeatureGuestCsum, false},
	{FeatureHostTSO4, FeatureCsum, false},
	{FeatureHostTSO6, FeatureCsum, false},
	{FeatureHostECN, FeatureHostTSO4 | FeatureHostTSO6, true},
	{FeatureHostUFO, FeatureCsum, false},
	{FeatureCtrlGuestOffloads, FeatureCtrlVQ, false},
	{FeatureMQ, FeatureCtrlVQ, false},
}

// struct virtio_net_config (spec §5.1.4): the fields kvmm presents.
const (
	configMACOff      = 0 // u8 mac[6]
	configStatusOff   = 6 // le16 status
	configMaxPairsOff = 8 // le16 max_virtqueue_pairs
	configLen         = 10

	// StatusLinkUp is config.status's VIRTIO_NET_S_LINK_UP.
	StatusLinkUp = 1
)

// struct virtio_net_hdr_v1 (spec §5.1.6, vhost.VnetHdr): with VERSION_1
// every buffer of both directions starts with it, num_buffers included,
// and it is what the taps carry in front of each frame.
const (
	HdrLen           = vhost.TapVnetHdrLen
	hdrFlagsOff      = 0
	hdrGSOTypeOff    = 1
	hdrNumBuffersOff = 10

	// ethHdrLen is the shortest frame worth sending: a destination,
	// source and EtherType (the tap refuses anything shorter).
	ethHdrLen = 14
)

// MaxFrameLen is the largest frame with its header either way: a 64 KiB
// GSO packet, its Ethernet and VLAN headers and the virtio header (QEMU
// and vhost-net use the same bound).
const MaxFrameLen = HdrLen + 65536 + 18

// Control queue (spec §5.1.6.5): a request is struct virtio_net_ctrl_hdr
// {u8 class, u8 command}, command data, and a device-writable ack byte.
const (
	ctrlOK  = 0
	ctrlErr = 1

	ctrlClassMQ            = 4
	ctrlMQVQPairsSet       = 0
	ctrlClassGuestOffloads = 5
	ctrlGuestOffloadsSet   = 0

	// ctrlMaxData bounds the command data read: the commands kvmm knows
	// carry 2 or 8 bytes, and a driver must not make the device copy
	// megabytes to say nothing.
	ctrlMaxData = 64
)

// MaxQueuePairs is the most queue pairs a device may have: the tun and
// macvtap drivers' queue limit (the spec's VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX,
// 0x8000, is far above it), and 2N+1 queues fit the transport.
const MaxQueuePairs = vhost.MaxQueuePairs

// DefaultQueueSize is each virtqueue's maximum size: QEMU's default for
// virtio-net, which Linux uses as it is.
const DefaultQueueSize = 256
