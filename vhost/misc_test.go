package vhost

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOffloadFlags(t *testing.T) {
	const (
		csum = 1 << FeatureNetGuestCsum
		tso4 = 1 << FeatureNetGuestTSO4
		tso6 = 1 << FeatureNetGuestTSO6
		ecn  = 1 << FeatureNetGuestECN
		ufo  = 1 << FeatureNetGuestUFO
	)
	for _, tc := range []struct {
		features uint64
		want     uint
	}{
		{0, 0},
		{csum, TunFCsum},
		{csum | tso4, TunFCsum | TunFTSO4},
		{csum | tso6, TunFCsum | TunFTSO6},
		{csum | tso4 | tso6 | ecn | ufo, TunFCsum | TunFTSO4 | TunFTSO6 | TunFTSOECN | TunFUFO},
		{csum | ufo, TunFCsum | TunFUFO},
		// Dependencies the kernel enforces (and virtio requires):
		{tso4 | tso6 | ecn | ufo, 0}, // nothing without GUEST_CSUM
		{csum | ecn, TunFCsum},       // ECN needs TSO
		{csum | tso6 | ecn, TunFCsum | TunFTSO6 | TunFTSOECN},
		// Host-side and unrelated features do not leak in.
		{1<<FeatureNetCsum | 1<<11 /* HOST_TSO4 */ | 1<<FeatureVersion1, 0},
	} {
		if got := OffloadFlags(tc.features); got != tc.want {
			t.Errorf("OffloadFlags(%#x) = %#x, want %#x", tc.features, got, tc.want)
		}
	}
}

func TestChoose(t *testing.T) {
	ok := func() error { return nil }
	missing := func() error { return errors.New("/dev/vhost-net does not exist") }
	for _, tc := range []struct {
		mode      string
		avail     func() error
		use       bool
		reason    string // fragment
		errSubstr string
	}{
		{"auto", ok, true, "vhost-net backend: vhost=auto", ""},
		{"", ok, true, "vhost-net backend", ""},
		{"auto", missing, false, "userspace virtio-net backend: vhost=auto and vhost-net is unusable: /dev/vhost-net does not exist", ""},
		{"on", ok, true, "vhost=on", ""},
		{"on", missing, false, "", "vhost=on but vhost-net is unusable: /dev/vhost-net does not exist"},
		{"off", ok, false, "vhost=off", ""},
		{"off", missing, false, "vhost=off", ""},
		{"yes", ok, false, "", `vhost="yes"`},
	} {
		use, reason, err := choose(tc.mode, tc.avail)
		if tc.errSubstr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errSubstr) {
				t.Errorf("%s: err %v, want %q", tc.mode, err, tc.errSubstr)
			}
			continue
		}
		if err != nil || use != tc.use || !strings.Contains(reason, tc.reason) {
			t.Errorf("%q: %v %q %v; want %v %q", tc.mode, use, reason, err, tc.use, tc.reason)
		}
	}
}

// On this host the answer is whatever /dev/vhost-net's state is; the
// workplace has none, so this checks the missing-node path for real.
func TestAvailableOnThisHost(t *testing.T) {
	err := Available()
	use, reason, cerr := Choose(VhostAuto)
	if cerr != nil {
		t.Fatal(cerr)
	}
	if err == nil {
		if !use {
			t.Errorf("vhost-net usable but auto chose userspace: %s", reason)
		}
		return
	}
	t.Logf("vhost-net here: %v", err)
	if use || !strings.Contains(reason, "userspace") {
		t.Errorf("auto with %v: use %v, %q", err, use, reason)
	}
	if _, statErr := os.Stat(DevicePath); errors.Is(statErr, os.ErrNotExist) && !strings.Contains(err.Error(), "modprobe vhost_net") {
		t.Errorf("missing node reported as %v", err)
	}
	if _, _, err := Choose(VhostOn); err == nil {
		t.Error("vhost=on succeeded without vhost-net")
	}
}

func TestAvailableAt(t *testing.T) {
	dir := t.TempDir()
	if err := availableAt(filepath.Join(dir, "vhost-net")); !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing: %v", err)
	}
	// A directory cannot be opened for writing: the generic path.
	if err := availableAt(dir); !errors.Is(err, unix.EISDIR) || !strings.Contains(err.Error(), "open "+dir) {
		t.Errorf("directory: %v", err)
	}
	if err := availableAt("/dev/null"); err != nil {
		t.Errorf("/dev/null opens: %v", err)
	}
	if os.Geteuid() != 0 {
		f := filepath.Join(dir, "noperm")
		os.WriteFile(f, nil, 0)
		if err := availableAt(f); !errors.Is(err, unix.EACCES) || !strings.Contains(err.Error(), "no permission") {
			t.Errorf("no permission: %v", err)
		}
	}
}

func TestVnetHdrRoundTrip(t *testing.T) {
	h := VnetHdr{Flags: VnetHdrFNeedsCsum, GSOType: VnetHdrGSOTCPv6 | VnetHdrGSOECN, HdrLen: 74, GSOSize: 1440, CsumStart: 54, CsumOffset: 16, NumBuffers: 3}
	b := make([]byte, TapVnetHdrLen)
	h.Put(b)
	want := []byte{1, 0x84, 74, 0, 0xa0, 0x05, 54, 0, 16, 0, 3, 0}
	if string(b) != string(want) {
		t.Errorf("Put: % x, want % x", b, want)
	}
	got, err := ParseVnetHdr(b)
	if err != nil || got != h {
		t.Errorf("Parse: %+v %v", got, err)
	}
	if _, err := ParseVnetHdr(b[:10]); err == nil {
		t.Error("10-byte header parsed")
	}
}
