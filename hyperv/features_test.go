package hyperv

import (
	"strings"
	"testing"
)

func TestParseFeatures(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Features
		err  string
	}{
		{"", DefaultFeatures, ""},
		{"default", DefaultFeatures, ""},
		{"time,vpindex,crash,frequencies,vp-assist", DefaultFeatures, ""},
		{" time , vpindex ", FeatTime | FeatVPIndex, ""},
		{"none", 0, ""},
		{"default,tsc-invariant", DefaultFeatures | FeatTSCInvariant, ""},
		{"default,synic,stimer", DefaultFeatures | FeatSynIC | FeatSTimer, ""},
		{"time,time", FeatTime, ""},
		{"time,relaxed", 0, `"relaxed"`},
		{"time,", 0, `""`},
	} {
		got, err := ParseFeatures(tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseFeatures(%q) error %v, want one naming %s", tc.in, err, tc.err)
			}
		case err != nil:
			t.Errorf("ParseFeatures(%q): %v", tc.in, err)
		case got != tc.want:
			t.Errorf("ParseFeatures(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	// String round-trips in canonical order.
	all := DefaultFeatures | FeatTSCInvariant | FeatSynIC | FeatSTimer
	if s := all.String(); s != "time,vpindex,crash,frequencies,vp-assist,tsc-invariant,synic,stimer" {
		t.Errorf("String = %q", s)
	}
	if back, err := ParseFeatures(all.String()); err != nil || back != all {
		t.Errorf("round trip: %s, %v", back, err)
	}
	if Features(0).String() != "none" {
		t.Errorf("empty set prints %q", Features(0).String())
	}
}

func TestParseBackend(t *testing.T) {
	for in, want := range map[string]Backend{"": BackendAuto, "auto": BackendAuto, "kernel": BackendKernel, "user": BackendUser} {
		if got, err := ParseBackend(in); err != nil || got != want {
			t.Errorf("ParseBackend(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseBackend("qemu"); err == nil {
		t.Error("ParseBackend(qemu) accepted")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		f    Features
		b    Backend
		want string
	}{
		{DefaultFeatures, BackendUser, ""},
		{DefaultFeatures | FeatSynIC | FeatSTimer, BackendAuto, ""},
		{DefaultFeatures | FeatSynIC | FeatSTimer, BackendKernel, ""},
		{DefaultFeatures | FeatSynIC, BackendUser, "--hyperv synic: synic and stimer need the in-kernel backend"},
		{DefaultFeatures | FeatSTimer, BackendKernel, "stimer needs synic"},
		{FeatSynIC | FeatSTimer, BackendKernel, "stimer needs time"},
	} {
		err := Validate(tc.f, tc.b)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%s, %s) = %v, want %q", tc.f, tc.b, err, tc.want)
		}
	}
}
