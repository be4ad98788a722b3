package e2e

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kvmm/kvmm/vmm"
)

// TestDebianDetectsVMware boots the Debian kernel with the VMware
// personality and checks what Linux 6.1 says about its hypervisor, all of
// which happens in setup_arch, before anything this workplace's KVM cannot
// emulate: so this test also runs where a stock kernel cannot boot (it
// then stops at CMPXCHG16B, kvmm's status 125, after these lines). On a
// host that runs the kernel through, the guest powers off.
func TestDebianDetectsVMware(t *testing.T) {
	kernel, initrd := guestFiles(t)
	cfg := vmm.DefaultConfig()
	cfg.Kernel, cfg.Initrd, cfg.Memory = kernel, initrd, 512<<20
	cfg.Personality = "vmware"
	// earlyprintk: the lines come before the console driver exists.
	cfg.Cmdline = "earlyprintk=serial,ttyS0 console=ttyS0 panic=-1 reboot=k kvmm.check=basic"
	cfg.OnReboot = vmm.OnRebootExit
	var out vmm.SerialBuffer
	vm, err := vmm.New(cfg, vmm.Options{Serial: &out, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := vm.Run(ctx)
	if err != nil {
		t.Fatalf("guest did not finish: %v\n%s", err, out.String())
	}
	console := out.String()
	if res.Status != 0 && !strings.Contains(res.Reason, "CMPXCHG16B") {
		t.Errorf("exit status %d (%s): want 0, or this host's CMPXCHG16B stop", res.Status, res.Reason)
	}
	for _, want := range []string{
		"vmware: hypercall mode: 0x00",          // 0x40000010 ECX: I/O port
		"Hypervisor detected: VMware",           // VMware won over KVM
		"vmware: TSC freq read from hypervisor", // backdoor GETHZ
		"vmware: Host bus clock speed read from hypervisor : 1000000000 Hz",
		"Booting paravirtualized kernel on VMware hypervisor",
	} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	for _, bad := range []string{"Failed to get TSC freq", "Hypervisor detected: KVM", "vmware-stealtime"} {
		if strings.Contains(console, bad) {
			t.Errorf("console has %q", bad)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("status %d (%s); console:\n%s", res.Status, res.Reason, console)
	}
}
