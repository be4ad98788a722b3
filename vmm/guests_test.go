package vmm

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvmm/kvmm/internal/guesttest"
)

// These tests boot the test guests of testdata/guests under real /dev/kvm.
// The same guests run under QEMU in internal/guesttest, which proves the
// guests themselves right; here they prove kvmm right.

func requireKVM(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no usable /dev/kvm: %v", err)
	}
	f.Close()
}

// bootGuest runs a config to completion and returns its output and result.
func bootGuest(t *testing.T, cfg Config) (string, Result) {
	t.Helper()
	requireKVM(t)
	var out SerialBuffer
	vm, err := New(cfg, Options{Serial: &out, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := vm.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v (result %+v)\nserial:\n%s", err, res, out.String())
	}
	return out.String(), res
}

func guestConfig(t *testing.T, name string, cpus int) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Kernel = guesttest.BuildT(t, name)
	cfg.CPUs = cpus
	cfg.Memory = 128 << 20
	cfg.Cmdline = ""
	cfg.OnReboot = OnRebootExit
	return cfg
}

func expect(t *testing.T, out string, res Result, status int, lines ...string) {
	t.Helper()
	if res.Status != status {
		t.Errorf("status %d (%s), want %d", res.Status, res.Reason, status)
	}
	for _, l := range lines {
		if !strings.Contains(out, l) {
			t.Errorf("serial output lacks %q", l)
		}
	}
	if t.Failed() {
		t.Logf("serial:\n%s", out)
	}
}

func TestBuiltinSelfTest(t *testing.T) {
	for _, cpus := range []int{1, 2, 4} {
		cfg := DefaultConfig()
		cfg.CPUs = cpus
		out, res := bootGuest(t, cfg)
		expect(t, out, res, StatusPowerOff, "kvmm self-test", "checksum ok", "PASS selftest")
		if strings.Contains(out, "FAIL") {
			t.Errorf("%d cpus: self-test reported a failure:\n%s", cpus, out)
		}
	}
}

func TestHelloGuest(t *testing.T) {
	cfg := guestConfig(t, "hello", 1)
	out, res := bootGuest(t, cfg)
	expect(t, out, res, guesttest.PassStatus, "hello from the test guest", guesttest.PassLine("hello"))
}

func TestHelloGuestChosenStatus(t *testing.T) {
	cfg := guestConfig(t, "hello", 1)
	cfg.Cmdline = "hello.fail"
	out, res := bootGuest(t, cfg)
	expect(t, out, res, guesttest.FailStatus, guesttest.FailPrefix("hello"))
}

func TestSMPGuest(t *testing.T) {
	for _, cpus := range []int{2, 4} {
		cfg := guestConfig(t, "smp", cpus)
		out, res := bootGuest(t, cfg)
		expect(t, out, res, guesttest.PassStatus, guesttest.PassLine("smp"))
	}
}

func TestS5Guest(t *testing.T) {
	cfg := guestConfig(t, "s5", 1)
	out, res := bootGuest(t, cfg)
	expect(t, out, res, StatusPowerOff, "SLP_TYPa=0")
	if strings.Contains(out, "FAIL") {
		t.Errorf("guest kept running after S5:\n%s", out)
	}
}

// TestProbeGuest runs the stock-kernel capability probe. On a host with
// hardware virtualization it passes; on this workplace's emulated KVM it
// must stop with a KVM internal error that kvmm diagnoses by instruction.
func TestProbeGuest(t *testing.T) {
	cfg := guestConfig(t, "probe", 1)
	out, res := bootGuest(t, cfg)
	if res.Status == guesttest.PassStatus {
		return
	}
	if res.Status != StatusInternalError {
		t.Fatalf("probe ended with status %d (%s), want %d or %d\n%s", res.Status, res.Reason, guesttest.PassStatus, StatusInternalError, out)
	}
	if !strings.Contains(res.Reason, "emulation failure") || !strings.Contains(res.Reason, "rip=") {
		t.Errorf("internal error without a diagnosis and registers: %s", res.Reason)
	}
	found := false
	for _, insn := range []string{"XSAVE", "XRSTOR", "CMPXCHG16B", "INT3", "IRET", "XGETBV"} {
		found = found || strings.Contains(res.Reason, insn)
	}
	if !found {
		t.Errorf("diagnosis names no instruction: %s", res.Reason)
	}
	t.Logf("probe stopped as expected here: %s", res.Reason)
}

func TestNewRefusesBadInput(t *testing.T) {
	requireKVM(t)
	notKernel := filepath.Join(t.TempDir(), "notakernel")
	if err := os.WriteFile(notKernel, bytes.Repeat([]byte{0x90}, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"not a kernel", func(c *Config) { c.Kernel = notKernel }, "not a bzImage"},
		{"no kvm device", func(c *Config) { c.KVMDevice = "/nonexistent/kvm" }, "open KVM device"},
		{"too many cpus for KVM", func(c *Config) { c.CPUs = MaxCPUs }, ""},
		{"bad memory", func(c *Config) { c.Memory = 3 }, "memory"},
	} {
		cfg := DefaultConfig()
		tc.mutate(&cfg)
		vm, err := New(cfg, Options{})
		if tc.want == "" {
			// Whether 254 vCPUs fit depends on the host; either way New
			// must answer cleanly.
			if err == nil {
				vm.Stop("test")
			}
			continue
		}
		if err == nil {
			vm.Stop("test")
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not mention %q", tc.name, err, tc.want)
		}
	}
}
