package vhost

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// NetKind is the kind of host interface a --net option asks for.
type NetKind string

const (
	KindTap     NetKind = "tap"
	KindMacvtap NetKind = "macvtap"
)

// TapAuto as a tap name asks kvmm to create a tap (named kvmm0, kvmm1, ...
// by the kernel) and remove it on exit.
const TapAuto = "auto"

// Macvtap modes (IFLA_MACVLAN_MODE); bridge is the default because it is
// the only one in which the guest can talk to other macvtaps of the same
// parent without help from an external switch.
const (
	MacvtapBridge   = "bridge"
	MacvtapVEPA     = "vepa"
	MacvtapPrivate  = "private"
	MacvtapPassthru = "passthru"
)

// MaxQueuePairs is the most queue pairs a --net option may ask for: the tun
// and macvtap drivers' MAX_TAP_QUEUES (256).
const MaxQueuePairs = 256

// NetSpec is a validated --net option.
type NetSpec struct {
	Kind NetKind
	// Tap is the tap's name, or TapAuto (KindTap only).
	Tap string
	// Parent is the host interface a macvtap sits on (KindMacvtap only).
	Parent string
	// Mode is the macvtap mode (KindMacvtap only; "" for a tap).
	Mode string
	// MAC is the guest's MAC address; nil when none was given.
	MAC net.HardwareAddr
	// Vhost is VhostAuto, VhostOn or VhostOff.
	Vhost string
	// Queues is the number of queue pairs (tap queues), at least 1.
	Queues int
	// Bridge is an existing bridge to attach the tap to (KindTap only).
	Bridge string
}

// ParseNetSpec parses a --net option:
//
//	tap=NAME|auto[,mac=MAC][,vhost=on|off|auto][,queues=N][,bridge=BR]
//	macvtap=PARENT[,mode=bridge|vepa|private|passthru][,mac=MAC][,vhost=...][,queues=N]
//
// The first key names the kind; every error names the offending key and
// value.
func ParseNetSpec(s string) (NetSpec, error) {
	spec := NetSpec{Vhost: VhostAuto, Queues: 1}
	if strings.TrimSpace(s) == "" {
		return NetSpec{}, fmt.Errorf("--net: empty; want tap=NAME|auto[,...] or macvtap=PARENT[,...]")
	}
	seen := map[string]bool{}
	for i, field := range strings.Split(s, ",") {
		key, val, ok := strings.Cut(field, "=")
		if !ok {
			return NetSpec{}, fmt.Errorf("--net %q: %q is not key=value", s, field)
		}
		if val == "" {
			return NetSpec{}, fmt.Errorf("--net %q: %s has an empty value", s, key)
		}
		if seen[key] {
			return NetSpec{}, fmt.Errorf("--net %q: %s given twice", s, key)
		}
		seen[key] = true
		if i == 0 {
			switch key {
			case "tap":
				spec.Kind = KindTap
				if val != TapAuto {
					if err := validIfName(val); err != nil {
						return NetSpec{}, fmt.Errorf("--net %q: tap=%q: %w", s, val, err)
					}
					if strings.Contains(val, "%") {
						return NetSpec{}, fmt.Errorf("--net %q: tap=%q: a name template is not a name; use tap=auto", s, val)
					}
				}
				spec.Tap = val
			case "macvtap":
				spec.Kind = KindMacvtap
				if err := validIfName(val); err != nil {
					return NetSpec{}, fmt.Errorf("--net %q: macvtap=%q: %w", s, val, err)
				}
				spec.Parent = val
				spec.Mode = MacvtapBridge
			default:
				return NetSpec{}, fmt.Errorf("--net %q: starts with %q; want tap=NAME|auto or macvtap=PARENT first", s, key)
			}
			continue
		}
		switch key {
		case "mac":
			mac, err := parseGuestMAC(val)
			if err != nil {
				return NetSpec{}, fmt.Errorf("--net %q: mac=%q: %w", s, val, err)
			}
			spec.MAC = mac
		case "vhost":
			switch val {
			case VhostOn, VhostOff, VhostAuto:
				spec.Vhost = val
			default:
				return NetSpec{}, fmt.Errorf("--net %q: vhost=%q: want on, off or auto", s, val)
			}
		case "queues":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > MaxQueuePairs {
				return NetSpec{}, fmt.Errorf("--net %q: queues=%q: want a queue-pair count in 1..%d", s, val, MaxQueuePairs)
			}
			spec.Queues = n
		case "bridge":
			if spec.Kind != KindTap {
				return NetSpec{}, fmt.Errorf("--net %q: bridge= applies to a tap; a macvtap is already on its parent", s)
			}
			if err := validIfName(val); err != nil {
				return NetSpec{}, fmt.Errorf("--net %q: bridge=%q: %w", s, val, err)
			}
			spec.Bridge = val
		case "mode":
			if spec.Kind != KindMacvtap {
				return NetSpec{}, fmt.Errorf("--net %q: mode= applies to a macvtap", s)
			}
			switch val {
			case MacvtapBridge, MacvtapVEPA, MacvtapPrivate, MacvtapPassthru:
				spec.Mode = val
			default:
				return NetSpec{}, fmt.Errorf("--net %q: mode=%q: want bridge, vepa, private or passthru", s, val)
			}
		case "tap", "macvtap":
			return NetSpec{}, fmt.Errorf("--net %q: %s= must come first and only once", s, key)
		default:
			return NetSpec{}, fmt.Errorf("--net %q: unknown key %q (known: mac, vhost, queues, bridge for a tap, mode for a macvtap)", s, key)
		}
	}
	return spec, nil
}

// String formats the spec in ParseNetSpec's syntax, keys in a fixed order.
func (s NetSpec) String() string {
	var b strings.Builder
	switch s.Kind {
	case KindTap:
		b.WriteString("tap=" + s.Tap)
	case KindMacvtap:
		b.WriteString("macvtap=" + s.Parent + ",mode=" + s.Mode)
	}
	if s.MAC != nil {
		b.WriteString(",mac=" + s.MAC.String())
	}
	fmt.Fprintf(&b, ",vhost=%s,queues=%d", s.Vhost, s.Queues)
	if s.Bridge != "" {
		b.WriteString(",bridge=" + s.Bridge)
	}
	return b.String()
}

// validIfName applies the kernel's dev_valid_name: 1..15 bytes, not "." or
// "..", no '/', ':' or whitespace.
func validIfName(name string) error {
	if len(name) == 0 || len(name) > 15 {
		return fmt.Errorf("interface names are 1 to 15 bytes, this one is %d", len(name))
	}
	if name == "." || name == ".." {
		return fmt.Errorf("not a valid interface name")
	}
	for _, c := range []byte(name) {
		if c == '/' || c == ':' || c <= ' ' || c == 0x7f {
			return fmt.Errorf("interface names cannot contain %q", c)
		}
	}
	return nil
}

// parseGuestMAC parses a MAC a guest NIC can own: 6 bytes, unicast, not all
// zero.
func parseGuestMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, err
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("want a 6-byte Ethernet address, got %d bytes", len(mac))
	}
	if mac[0]&1 != 0 {
		return nil, fmt.Errorf("a multicast address cannot be a NIC's address")
	}
	if mac.String() == "00:00:00:00:00:00" {
		return nil, fmt.Errorf("the all-zero address cannot be a NIC's address")
	}
	return mac, nil
}
