package vmm

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bobuhiro11/gokvm/kvm"

	"github.com/kvmm/kvmm/hyperv"
	"github.com/kvmm/kvmm/vcpu"
)

// The Hyper-V test guest (testdata/guests/hyperv.S) under kvmm. Unlike the
// other guests it has no QEMU oracle here: QEMU's hv-* flags need KVM's
// in-kernel Hyper-V (KVM_CAP_HYPERV), which this workplace's hosts lack,
// so these tests are the only runs of it.

func hypervConfig(t *testing.T, cmdline string) Config {
	t.Helper()
	cfg := guestConfig(t, "hyperv", 1)
	cfg.Personality = string(vcpu.PersonalityHyperV)
	cfg.Cmdline = cmdline
	return cfg
}

// hostHasKernelHyperV reports whether /dev/kvm offers the in-kernel
// Hyper-V, which changes the backend auto picks.
func hostHasKernelHyperV(t *testing.T) bool {
	t.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no usable /dev/kvm: %v", err)
	}
	defer f.Close()
	return hyperv.ProbeHost(f.Fd()).KernelUsable()
}

// runWithEvents boots cfg and returns the serial output, the result, every
// event and the log.
func runWithEvents(t *testing.T, cfg Config) (string, Result, []Event, string) {
	t.Helper()
	requireKVM(t)
	var out, logs SerialBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	vm, err := New(cfg, Options{Serial: &out, Logger: log})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	events, unsubscribe := vm.Subscribe()
	defer unsubscribe()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := vm.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v (result %+v)\nserial:\n%s\nlog:\n%s", err, res, out.String(), logs.String())
	}
	var evs []Event
	for e := range events { // closed once the VM has stopped
		evs = append(evs, e)
	}
	return out.String(), res, evs, logs.String()
}

func TestHyperVGuest(t *testing.T) {
	kernelHV := hostHasKernelHyperV(t)
	for _, tc := range []struct {
		name, cmdline string
		lines         []string // in the serial output
		detail        []string // in the guest-crashed event
	}{
		{
			name: "registers",
			lines: []string{
				"hyperv: reporting a crash through the crash MSRs",
			},
			detail: []string{"P0=0x1 ", "P1=0x8100000601000000 ", "P3=0xa5a5a5a5 "},
		},
		{
			name:    "kmsg",
			cmdline: "hyperv.kmsg",
			lines: []string{
				"hyperv: reporting a crash with a message through the crash MSRs",
			},
			detail: []string{"P0=0x0 ", `message: "Kernel panic - not syncing: hyperv test guest\nCPU: 0 PID: 1 Comm: init\n"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, res, events, logs := runWithEvents(t, hypervConfig(t, tc.cmdline))
			common := []string{
				`hyperv: CPUID 0x40000000 "Microsoft Hv", max leaf 0x4000000a`,
				"hyperv: features eax=0x00000a62 ebx=0x00000000 edx=0x00000500",
				"hyperv: no KVM signature in 0x40000000-0x4000ff00",
				"hyperv: invariant TSC",
				"hyperv: GUEST_OS_ID 0x8100000601000000",
				", a call returns status 2",
				"hyperv: VP_INDEX 0",
				"APIC_FREQUENCY 1000000000 Hz",
				"hyperv: TSC page sequence 1 scale",
				"hyperv: TSC page scale matches TSC_FREQUENCY",
				"hyperv: TSC page and TIME_REF_COUNT agree within 1 ms",
				"hyperv: TIME_REF_COUNT advanced by",
				"hyperv: VP assist page, TSC invariant control and unknown synthetic MSRs accepted",
				"hyperv: #GP on HYPERCALL beyond RAM",
				"hyperv: #GP on HYPERCALL reserved bits",
				"hyperv: #GP on REFERENCE_TSC reserved bits",
				"hyperv: #GP on VP_INDEX write (read-only)",
				"hyperv: #GP on TIME_REF_COUNT write (read-only)",
				"hyperv: #GP on CRASH_CTL reserved bits",
				"hyperv: #GP on an MSR KVM does not know",
				"hyperv: CRASH_CTL offers 0xc000000000000000",
			}
			expect(t, out, res, StatusGuestCrashed, append(common, tc.lines...)...)
			if strings.Contains(out, "FAIL") {
				t.Errorf("the guest reported a failure:\n%s", out)
			}
			var crash *Event
			for i := range events {
				if events[i].Type == "guest-crashed" {
					crash = &events[i]
				}
			}
			if crash == nil {
				t.Fatalf("no guest-crashed event among %+v", events)
			}
			for _, d := range tc.detail {
				if !strings.Contains(crash.Detail, d) {
					t.Errorf("guest-crashed detail %q lacks %q", crash.Detail, d)
				}
			}
			if !strings.Contains(res.Reason, "guest crashed") {
				t.Errorf("result reason %q", res.Reason)
			}
			wantBackend := "backend=user"
			if kernelHV {
				wantBackend = "backend=kernel"
			}
			for _, l := range []string{wantBackend, "guest crashed (Hyper-V crash MSRs)", "p1=0x"} {
				if !strings.Contains(logs, l) {
					t.Errorf("log lacks %q:\n%s", l, logs)
				}
			}
			if t.Failed() {
				t.Logf("log:\n%s", logs)
			}
			t.Logf("serial:\n%s\nguest-crashed: %s", out, crash.Detail)
		})
	}
}

// TestHyperVKernelBackendRefused: on a host without the in-kernel Hyper-V,
// --hyperv-backend kernel and the kernel-only enlightenments are clear
// errors from New.
func TestHyperVKernelBackendRefused(t *testing.T) {
	if hostHasKernelHyperV(t) {
		t.Skip("this host has the in-kernel Hyper-V")
	}
	for _, tc := range []struct {
		name            string
		hyperv, backend string
		want            string
	}{
		{"kernel backend", "", "kernel", "--hyperv-backend kernel: this host's KVM has no in-kernel Hyper-V (KVM_CAP_HYPERV is 0)"},
		{"stimer with auto", "default,synic,stimer", "auto", "--hyperv synic,stimer: synic and stimer need the in-kernel Hyper-V, which this host's KVM lacks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := hypervConfig(t, "")
			cfg.HyperV, cfg.HyperVBackend = tc.hyperv, tc.backend
			vm, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
			if err == nil {
				vm.Stop("test")
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestHyperVPauseStopsReferenceTime: TIME_REF_COUNT does not count the
// time a VM spends paused, and stays monotonic across the pause.
func TestHyperVPauseStopsReferenceTime(t *testing.T) {
	requireKVM(t)
	if hostHasKernelHyperV(t) {
		t.Skip("the in-kernel backend keeps its own reference time")
	}
	vm, err := New(hypervConfig(t, ""), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer vm.Stop("test")
	m := vm.m
	v := m.vcpus[0]
	read := func() uint64 {
		t.Helper()
		r, ok := m.ReadMSR(v, hyperv.MSRTimeRefCount)
		if !ok {
			t.Fatal("TIME_REF_COUNT read refused")
		}
		return r
	}
	r0 := read()
	time.Sleep(20 * time.Millisecond)
	m.hypervPause()
	paused := time.Now()
	time.Sleep(300 * time.Millisecond)
	m.hypervResume()
	pausedFor := time.Since(paused)
	r1 := read()
	if r1 < r0 {
		t.Fatalf("TIME_REF_COUNT went back across a pause: %d then %d", r0, r1)
	}
	elapsed := time.Duration(r1-r0) * 100 * time.Nanosecond
	if elapsed < 20*time.Millisecond || elapsed >= pausedFor {
		t.Errorf("reference time advanced %v over 20ms running and %v paused; want at least 20ms and less than the pause", elapsed, pausedFor)
	}
	t.Logf("reference time advanced %v over ~20ms running + %v paused", elapsed, pausedFor)
}

// TestHyperVNonSyntheticMSR: an MSR exit for an MSR outside the synthetic
// range (INVAL/UNKNOWN exits) gets #GP, as KVM would answer it; so does an
// MSR exit on a machine without the personality.
func TestHyperVNonSyntheticMSR(t *testing.T) {
	requireKVM(t)
	vm, err := New(hypervConfig(t, ""), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer vm.Stop("test")
	v := vm.m.vcpus[0]
	if _, ok := vm.m.ReadMSR(v, 0xC0DE0000); ok {
		t.Error("read of a non-synthetic MSR answered")
	}
	if vm.m.WriteMSR(v, 0x10, 0) {
		t.Error("write of a non-synthetic MSR answered")
	}
	plain := &machine{}
	if _, ok := plain.ReadMSR(v, hyperv.MSRGuestOSID); ok {
		t.Error("a machine without the personality answered an MSR read")
	}
}

func TestValidateHyperV(t *testing.T) {
	for _, tc := range []struct {
		name                         string
		personality, hyperv, backend string
		want                         string // "" = valid
	}{
		{"kvm default", "kvm", "", "", ""},
		{"hyperv default", "hyperv", "", "", ""},
		{"hyperv list", "hyperv", "time,vpindex,crash,frequencies,vp-assist", "user", ""},
		{"hyperv kernel-only with auto", "hyperv", "default,synic,stimer", "auto", ""},
		{"unknown name", "hyperv", "time,turbo", "", `hyperv enlightenment "turbo"`},
		{"bad backend", "hyperv", "", "firmware", `hyperv backend "firmware"`},
		{"synic with user", "hyperv", "synic", "user", "need the in-kernel backend"},
		{"stimer alone", "hyperv", "stimer,time", "kernel", "stimer needs synic"},
		{"options without personality", "kvm", "time", "", "need personality hyperv"},
		{"backend without personality", "kvm", "", "user", "need personality hyperv"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Personality, c.HyperV, c.HyperVBackend = tc.personality, tc.hyperv, tc.backend
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Error("accepted")
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestHyperVCPUIDHasNoKVMLeaves: the composed table of a hyperv vCPU has
// only the Hyper-V leaves in the hypervisor range, and the invariant TSC.
func TestHyperVCPUIDHasNoKVMLeaves(t *testing.T) {
	requireKVM(t)
	vm, err := New(hypervConfig(t, ""), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer vm.Stop("test")
	entries, err := vcpuCPUID(vm.m.vcpus[0])
	if err != nil {
		t.Fatal(err)
	}
	var sawVendor, sawInvTSC bool
	for _, e := range entries {
		if e.Ebx == 0x4b4d564b && e.Ecx == 0x564b4d56 {
			t.Errorf("KVM signature at %#x", e.Function)
		}
		switch e.Function {
		case hyperv.LeafVendor:
			sawVendor = e.Ebx == hyperv.Vendor[0] && e.Eax == hyperv.LeafMax
		case 0x80000007:
			sawInvTSC = e.Edx&(1<<8) != 0
		}
		if e.Function >= 0x40000000 && e.Function <= 0x4FFFFFFF && e.Function > hyperv.LeafMax {
			t.Errorf("leaf %#x beyond the Hyper-V leaves", e.Function)
		}
	}
	if !sawVendor || !sawInvTSC {
		t.Errorf("vendor leaf %v, invariant TSC %v", sawVendor, sawInvTSC)
	}
}

func vcpuCPUID(v *vcpu.VCPU) ([]kvm.CPUIDEntry2, error) {
	c := &kvm.CPUID{Nent: 256, Entries: make([]kvm.CPUIDEntry2, 256)}
	if err := kvm.GetCPUID2(v.FD(), c); err != nil {
		return nil, err
	}
	return c.Entries[:c.Nent], nil
}

// TestComposeCPUIDHyperV: without KVM, the composition drops KVM's
// hypervisor leaves, adds the invariant TSC (even when KVM did not report
// leaf 0x80000007) and takes the Hyper-V leaves from the caller; the kvm
// personality keeps its signature.
func TestComposeCPUIDHyperV(t *testing.T) {
	supported := []kvm.CPUIDEntry2{
		{Function: 0x0, Eax: 0xd},
		{Function: 0x1, Ecx: 1 << 9},
		{Function: 0x40000000, Eax: 0x40000001, Ebx: 0x4b4d564b, Ecx: 0x564b4d56, Edx: 0x4d},
		{Function: 0x40000001, Eax: 0x01007afb},
		{Function: 0x80000000, Eax: 0x80000001},
		{Function: 0x80000001, Edx: 1 << 29},
	}
	got := vcpu.ComposeCPUID(supported, 1, 2, vcpu.ModelHost, vcpu.PersonalityHyperV, hyperv.Leaves(hyperv.DefaultFeatures, 2)...)
	byFn := map[uint32]kvm.CPUIDEntry2{}
	for _, e := range got {
		if _, dup := byFn[e.Function]; dup {
			t.Errorf("leaf %#x twice", e.Function)
		}
		byFn[e.Function] = e
	}
	if e := byFn[0x40000000]; e.Ebx != hyperv.Vendor[0] || e.Eax != hyperv.LeafMax {
		t.Errorf("0x40000000 = %+v, want Microsoft Hv", e)
	}
	if e := byFn[0x40000001]; e.Eax != 0x31237648 {
		t.Errorf("0x40000001 = %#x, want Hv#1 (KVM's features leaf must be gone)", e.Eax)
	}
	if byFn[0x80000007].Edx&(1<<8) == 0 || byFn[0x80000000].Eax < 0x80000007 {
		t.Errorf("invariant TSC missing: 0x80000000=%+v 0x80000007=%+v", byFn[0x80000000], byFn[0x80000007])
	}
	if byFn[0x1].Ecx&(1<<31) == 0 {
		t.Error("hypervisor bit clear")
	}
	kvmOnly := vcpu.ComposeCPUID(supported, 0, 1, vcpu.ModelHost, vcpu.PersonalityKVM)
	for _, e := range kvmOnly {
		if e.Function == 0x40000000 && e.Ebx != 0x4b4d564b {
			t.Errorf("kvm personality lost its signature: %+v", e)
		}
		if e.Function == 0x80000007 {
			t.Errorf("kvm personality gained leaf 0x80000007: %+v", e)
		}
	}
}
