package guesttest

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The benchmark guests (bench/, `make bench`) under the QEMU oracle.

func TestExitLoopGuestQEMU(t *testing.T) {
	requireQEMU(t)
	elf := BuildT(t, "exitloop")
	for _, mode := range []string{"pio", "mmio"} {
		res := runQEMU(t, microvmTimeout, elf, "microvm", 1, "-append", "exitloop.mode="+mode+" exitloop.n=300")
		expectVerdict(t, res, "exitloop", true)
		if !res.HasLine("exitloop: "+mode+" n=300") || !res.HasLine("exitloop: done") {
			t.Errorf("%s: serial output lacks the timing lines", mode)
		}
	}
}

func TestExitLoopGuestRefusesBadArguments(t *testing.T) {
	requireQEMU(t)
	elf := BuildT(t, "exitloop")
	for _, cmdline := range []string{"exitloop.n=300", "exitloop.mode=pio exitloop.n=150", "exitloop.mode=mmio exitloop.n=0"} {
		res := runQEMU(t, microvmTimeout, elf, "microvm", 1, "-append", cmdline)
		expectVerdict(t, res, "exitloop", false)
	}
}

func TestIdleGuestQEMU(t *testing.T) {
	requireQEMU(t)
	elf := BuildT(t, "idle")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := RunQEMU(ctx, elf, "microvm", 1)
	if res.Ending != TimedOut {
		t.Fatalf("the idle guest ended (%v, status %d): %v", res.Ending, res.ExitStatus, err)
	}
	if !strings.Contains(res.Serial, "idle: ready") {
		t.Errorf("serial output lacks \"idle: ready\":\n%s", res.Serial)
	}
}
