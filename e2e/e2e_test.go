// Package e2e boots the Debian guest (make guest) with a busybox initramfs
// and checks the guest's own view. Run with `make e2e`; `go test ./...`
// skips it unless KVMM_E2E=1.
//
// A stock Linux kernel needs instructions that some hosts' KVM cannot run
// (hosts without hardware virtualization, whose KVM emulates guest kernel
// mode: no IRET, INT3, XSAVE or CMPXCHG16B there). Every test first boots
// the probe guest (testdata/guests/probe.S) and skips, naming the missing
// instruction, where the host cannot run what a stock kernel needs.
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvmm/kvmm/internal/guesttest"
	"github.com/kvmm/kvmm/vmm"
)

// guestFiles returns the Debian kernel and initramfs, or skips.
func guestFiles(t *testing.T) (kernel, initrd string) {
	t.Helper()
	if os.Getenv("KVMM_E2E") != "1" {
		t.Skip("Linux end-to-end tests run with `make e2e` (KVMM_E2E=1)")
	}
	dir := os.Getenv("KVMM_GUEST_DIR")
	if dir == "" {
		root, err := guesttest.Root()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, "build", "guest")
	}
	kernel, initrd = filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initramfs.cpio.gz")
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v: run `make guest` first", err)
		}
	}
	return kernel, initrd
}

var probeOnce struct {
	sync.Once
	reason string
}

// requireStockKernelHost boots the probe guest once and skips every test when
// the host cannot run a stock kernel.
func requireStockKernelHost(t *testing.T) {
	t.Helper()
	probeOnce.Do(func() {
		elf, err := guesttest.Build(t.TempDir(), "probe")
		if err != nil {
			probeOnce.reason = fmt.Sprintf("cannot build the probe guest: %v", err)
			return
		}
		cfg := vmm.DefaultConfig()
		cfg.Kernel, cfg.Memory, cfg.Cmdline = elf, 64<<20, ""
		var out vmm.SerialBuffer
		vm, err := vmm.New(cfg, vmm.Options{Serial: &out, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			probeOnce.reason = fmt.Sprintf("cannot create the probe VM: %v", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := vm.Run(ctx)
		if err == nil && res.Status == guesttest.PassStatus {
			return
		}
		last := ""
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(l, "PROBE ") {
				last = l
			}
		}
		probeOnce.reason = fmt.Sprintf("this host's KVM cannot run a stock kernel: probe stopped after %q: %s", last, res.Reason)
	})
	if probeOnce.reason != "" {
		t.Skip(probeOnce.reason)
	}
}

// bootDebian boots the Debian guest and returns its console output and result.
// adjust, if not nil, edits the config (devices) before the VM is built.
func bootDebian(t *testing.T, cpus int, mem vmm.Size, cmdline string, adjust ...func(*vmm.Config)) (string, vmm.Result) {
	t.Helper()
	kernel, initrd := guestFiles(t)
	requireStockKernelHost(t)
	cfg := vmm.DefaultConfig()
	for _, f := range adjust {
		f(&cfg)
	}
	cfg.Kernel, cfg.Initrd, cfg.CPUs, cfg.Memory = kernel, initrd, cpus, mem
	cfg.Cmdline = "console=ttyS0 panic=-1 reboot=k " + cmdline
	cfg.OnReboot = vmm.OnRebootExit
	var out vmm.SerialBuffer
	vm, err := vmm.New(cfg, vmm.Options{Serial: &out})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := vm.Run(ctx)
	if err != nil {
		t.Fatalf("guest did not finish: %v\n%s", err, out.String())
	}
	return out.String(), res
}

func TestDebianBootsAndPowersOff(t *testing.T) {
	out, res := bootDebian(t, 2, 512<<20, "kvmm.check=basic")
	if res.Status != 0 {
		t.Errorf("exit status %d (%s), want 0 (poweroff)", res.Status, res.Reason)
	}
	for _, want := range []string{"KVMM-INIT-REACHED", "KVMM-CHECK cpus=2"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("console:\n%s", out)
	}
}

// TestDebianVirtioDevices: the guest's own virtio_pci finds a virtio-blk
// disk of the right size and a virtio-rng device on kvmm's PCI bus.
func TestDebianVirtioDevices(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out, res := bootDebian(t, 1, 512<<20, "kvmm.check=virtio,block", func(c *vmm.Config) {
		c.Disks = []vmm.DiskConfig{{Path: img, Serial: "e2e"}}
		c.RNG = true
	})
	if res.Status != 0 {
		t.Errorf("exit status %d (%s), want 0 (poweroff)", res.Status, res.Reason)
	}
	// Device ids in /sys/bus/virtio/devices/*/device: 0x0002 block, 0x0004 rng.
	for _, want := range []string{"KVMM-CHECK virtio=", "0x0002", "0x0004", "KVMM-CHECK block=", "vda:16384"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("console:\n%s", out)
	}
}
