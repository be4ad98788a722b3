package vhost

import (
	"net"
	"reflect"
	"strings"
	"testing"
)

func TestParseNetSpec(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	for _, tc := range []struct {
		in   string
		want NetSpec
	}{
		{"tap=auto", NetSpec{Kind: KindTap, Tap: TapAuto, Vhost: VhostAuto, Queues: 1}},
		{"tap=tap0", NetSpec{Kind: KindTap, Tap: "tap0", Vhost: VhostAuto, Queues: 1}},
		{"tap=auto,mac=52:54:00:12:34:56,vhost=on,queues=4,bridge=br0",
			NetSpec{Kind: KindTap, Tap: TapAuto, MAC: mac, Vhost: VhostOn, Queues: 4, Bridge: "br0"}},
		{"tap=t,bridge=virbr0,vhost=off", NetSpec{Kind: KindTap, Tap: "t", Vhost: VhostOff, Queues: 1, Bridge: "virbr0"}},
		{"tap=t,mac=52-54-00-12-34-56", NetSpec{Kind: KindTap, Tap: "t", MAC: mac, Vhost: VhostAuto, Queues: 1}},
		{"macvtap=eth0", NetSpec{Kind: KindMacvtap, Parent: "eth0", Mode: MacvtapBridge, Vhost: VhostAuto, Queues: 1}},
		{"macvtap=enp1s0f0,mode=passthru,queues=256,vhost=auto",
			NetSpec{Kind: KindMacvtap, Parent: "enp1s0f0", Mode: MacvtapPassthru, Vhost: VhostAuto, Queues: 256}},
		{"macvtap=eth0,mode=vepa,mac=52:54:00:12:34:56", NetSpec{Kind: KindMacvtap, Parent: "eth0", Mode: MacvtapVEPA, MAC: mac, Vhost: VhostAuto, Queues: 1}},
		{"macvtap=eth0,mode=private", NetSpec{Kind: KindMacvtap, Parent: "eth0", Mode: MacvtapPrivate, Vhost: VhostAuto, Queues: 1}},
		{"tap=fifteen-chars-x", NetSpec{Kind: KindTap, Tap: "fifteen-chars-x", Vhost: VhostAuto, Queues: 1}},
	} {
		got, err := ParseNetSpec(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseNetSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: a fragment the message must contain
	}{
		{"", "empty"},
		{"   ", "empty"},
		{"tap", "not key=value"},
		{"tap=", "tap has an empty value"},
		{"user=1", "want tap=NAME|auto or macvtap=PARENT first"},
		{"mac=52:54:00:12:34:56,tap=auto", "want tap=NAME|auto or macvtap=PARENT first"},
		{"tap=auto,tap=x", "given twice"},
		{"tap=auto,macvtap=eth0", "must come first"},
		{"tap=auto,,queues=2", `"" is not key=value`},
		{"tap=auto,queues=2,", `"" is not key=value`},
		{"tap=auto,queues=2,queues=3", "queues given twice"},
		{"tap=auto,queues=0", "queues=\"0\""},
		{"tap=auto,queues=-1", "queue-pair count"},
		{"tap=auto,queues=257", "1..256"},
		{"tap=auto,queues=two", "queue-pair count"},
		{"tap=auto,queues=0x2", "queue-pair count"},
		{"tap=auto,vhost=yes", "want on, off or auto"},
		{"tap=auto,vhost=ON", "want on, off or auto"},
		{"tap=auto,mac=zz:54:00:12:34:56", "mac="},
		{"tap=auto,mac=52:54:00:12:34", "mac="},
		{"tap=auto,mac=01:00:5e:00:00:01", "multicast"},
		{"tap=auto,mac=00:00:00:00:00:00", "all-zero"},
		{"tap=auto,mac=00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "6-byte"},
		{"tap=auto,mode=bridge", "mode= applies to a macvtap"},
		{"tap=auto,bridge=", "bridge has an empty value"},
		{"tap=auto,bridge=a/b", "cannot contain"},
		{"tap=sixteen-chars-xy", "1 to 15 bytes"},
		{"tap=a b", "cannot contain"},
		{"tap=a:b", "cannot contain"},
		{"tap=..", "not a valid interface name"},
		{"tap=kvmm%d", "use tap=auto"},
		{"macvtap=eth0,bridge=br0", "bridge= applies to a tap"},
		{"macvtap=eth0,mode=source", "want bridge, vepa, private or passthru"},
		{"macvtap=eth0,mode=", "mode has an empty value"},
		{"macvtap=eth0/1", "cannot contain"},
		{"tap=auto,model=virtio", `unknown key "model"`},
		{"tap=auto,=x", `unknown key ""`},
	} {
		_, err := ParseNetSpec(tc.in)
		if err == nil {
			t.Errorf("%q: accepted", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v; want it to mention %q", tc.in, err, tc.want)
		}
		if !strings.HasPrefix(err.Error(), "--net") {
			t.Errorf("%q: %v; want the option named", tc.in, err)
		}
	}
}

func TestNetSpecStringRoundTrip(t *testing.T) {
	for _, in := range []string{
		"tap=auto",
		"tap=t0,mac=52:54:00:12:34:56,vhost=off,queues=8,bridge=br0",
		"macvtap=eth0,mode=vepa,queues=2",
	} {
		s, err := ParseNetSpec(in)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseNetSpec(s.String())
		if err != nil {
			t.Fatalf("%q -> %q: %v", in, s.String(), err)
		}
		if !reflect.DeepEqual(s, again) {
			t.Errorf("%q -> %q -> %+v", in, s.String(), again)
		}
	}
}

// FuzzParseNetSpec: no input panics, and whatever parses is valid and
// survives a round trip through String.
func FuzzParseNetSpec(f *testing.F) {
	for _, s := range []string{
		"tap=auto", "tap=tap0,mac=52:54:00:12:34:56,vhost=on,queues=4,bridge=br0",
		"macvtap=eth0,mode=passthru", "tap=,", "=,=,=", "tap=a,queues=999999999999999999999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseNetSpec(in)
		if err != nil {
			return
		}
		if s.Queues < 1 || s.Queues > MaxQueuePairs {
			t.Fatalf("%q: queues %d", in, s.Queues)
		}
		switch s.Kind {
		case KindTap:
			if s.Tap != TapAuto && validIfName(s.Tap) != nil {
				t.Fatalf("%q: bad tap name %q", in, s.Tap)
			}
		case KindMacvtap:
			if validIfName(s.Parent) != nil || s.Bridge != "" {
				t.Fatalf("%q: bad macvtap spec %+v", in, s)
			}
		default:
			t.Fatalf("%q: kind %q", in, s.Kind)
		}
		again, err := ParseNetSpec(s.String())
		if err != nil || !reflect.DeepEqual(s, again) {
			t.Fatalf("%q -> %q -> %+v, %v", in, s.String(), again, err)
		}
	})
}
