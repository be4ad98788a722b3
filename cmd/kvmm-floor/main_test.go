package main

import (
	"os"
	"runtime"
	"testing"

	"github.com/kvmm/kvmm/internal/guesttest"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-kernel", "g.elf", "-mem", "64M", "-cmdline", "a b", "-serial", "-ioeventfd-port", "128"})
	if err != nil {
		t.Fatal(err)
	}
	want := options{kernel: "g.elf", mem: 64 << 20, cmdline: "a b", ioePort: 128, serial: true}
	if o != want {
		t.Errorf("options %+v, want %+v", o, want)
	}
	o, err = parseFlags([]string{"-kernel", "g.elf"})
	if err != nil || o.mem != 128<<20 || o.ioePort != -1 || o.serial {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	for _, bad := range [][]string{nil, {"-kernel", "g", "extra"}, {"-kernel", "g", "-mem", "12X"}, {"-kernel", "g", "-ioeventfd-port", "70000"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q): no error", bad)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"128M": 128 << 20, "1G": 1 << 30, "64K": 64 << 10, "4096": 4096} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := parseSize("M"); err == nil {
		t.Error("parseSize(\"M\"): no error")
	}
}

// TestFloorBootsTheBenchGuests runs the floor in-process on the guests it
// serves in `make bench` (not the idle guest: the floor waits forever on
// its HLT).
func TestFloorBootsTheBenchGuests(t *testing.T) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no usable /dev/kvm: %v", err)
	}
	f.Close()
	runtime.LockOSThread() // KVM_RUN from one thread, as in main
	defer runtime.UnlockOSThread()
	hello := guesttest.BuildT(t, "hello")
	exitloop := guesttest.BuildT(t, "exitloop")
	for _, tc := range []struct {
		name string
		o    options
		want int
	}{
		{"hello", options{kernel: hello, mem: 128 << 20, ioePort: -1}, guesttest.PassStatus},
		{"hello.fail", options{kernel: hello, mem: 128 << 20, cmdline: "hello.fail", ioePort: -1}, guesttest.FailStatus},
		{"exitloop pio", options{kernel: exitloop, mem: 128 << 20, cmdline: "exitloop.mode=pio exitloop.n=200", ioePort: -1}, guesttest.PassStatus},
		{"exitloop mmio", options{kernel: exitloop, mem: 128 << 20, cmdline: "exitloop.mode=mmio exitloop.n=200", ioePort: -1}, guesttest.PassStatus},
		{"exitloop ioeventfd", options{kernel: exitloop, mem: 128 << 20, cmdline: "exitloop.mode=pio exitloop.n=200", ioePort: 0x80}, guesttest.PassStatus},
		{"exitloop no mode", options{kernel: exitloop, mem: 128 << 20, ioePort: -1}, guesttest.FailStatus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, err := boot(tc.o)
			if err != nil || status != tc.want {
				t.Errorf("boot: status %d, %v; want %d", status, err, tc.want)
			}
		})
	}
}

func TestFloorRefusesAMissingKernel(t *testing.T) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm")
	}
	if status, err := boot(options{kernel: "/nonexistent.elf", mem: 128 << 20, ioePort: -1}); err == nil || status != statusVMMError {
		t.Errorf("status %d, %v", status, err)
	}
}
