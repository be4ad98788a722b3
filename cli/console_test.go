package cli

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/kvmm/kvmm/internal/guesttest"
	"github.com/kvmm/kvmm/vmm"
)

// TestCtrlAXStopsTheVM feeds Ctrl-A x through the console pump to a guest
// that never ends by itself.
func TestCtrlAXStopsTheVM(t *testing.T) {
	haveKVM(t)
	cfg := vmm.DefaultConfig()
	cfg.Kernel = guesttest.BuildT(t, "pwrbtn")
	cfg.Memory = 64 << 20
	cfg.Cmdline = ""
	var out vmm.SerialBuffer
	vm, err := vmm.New(cfg, vmm.Options{Serial: &out})
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	restore := attachConsole(r, vm)
	defer restore()
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("ab\x01\x01\x01x")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := vm.Wait(ctx)
	if err != nil {
		t.Fatalf("Ctrl-A x did not stop the VM: %v", err)
	}
	if res.Status != vmm.StatusStopped {
		t.Errorf("status %d (%s), want %d", res.Status, res.Reason, vmm.StatusStopped)
	}
	w.Close()
}
