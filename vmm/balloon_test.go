package vmm

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvmm/kvmm/balloon"
	"github.com/kvmm/kvmm/internal/guesttest"
	"github.com/kvmm/kvmm/layout"
	"github.com/kvmm/kvmm/vcpu"
)

// The VMware personality and balloon under real /dev/kvm. QEMU has no
// VMware balloon (its vmport answers the backdoor only), so the test guest
// testdata/guests/vmwballoon.S follows vmw_balloon's source and runs under
// kvmm only.

func TestValidateBalloon(t *testing.T) {
	for _, tc := range []struct {
		personality, balloon string
		kind                 string // "" = refused
		mention              string
	}{
		{"vmware", "", BalloonVMware, ""},
		{"vmware", "vmware", BalloonVMware, ""},
		{"vmware", "none", BalloonNone, ""},
		{"kvm", "", BalloonNone, ""},
		{"hyperv", "none", BalloonNone, ""},
		{"kvm", "vmware", "", "needs personality vmware"},
		{"kvm", "virtio", BalloonVirtio, ""},
		{"vmware", "virtio", BalloonVirtio, ""},
		{"vmware", "qemu", "", `balloon "qemu"`},
	} {
		c := Config{Personality: tc.personality, Balloon: tc.balloon}
		err := validateBalloon(&c)
		switch {
		case tc.kind != "" && err != nil:
			t.Errorf("%s/%q: %v", tc.personality, tc.balloon, err)
		case tc.kind != "" && c.balloonKind() != tc.kind:
			t.Errorf("%s/%q: kind %q, want %q", tc.personality, tc.balloon, c.balloonKind(), tc.kind)
		case tc.kind == "" && (err == nil || !strings.Contains(err.Error(), tc.mention)):
			t.Errorf("%s/%q: %v, want an error mentioning %q", tc.personality, tc.balloon, err, tc.mention)
		}
	}
	cfg := DefaultConfig()
	cfg.Personality = "vmware"
	if err := cfg.Validate(); err != nil {
		t.Errorf("personality vmware refused: %v", err)
	}
}

// newVMwareVM builds (does not start) a VM with the VMware personality.
func newVMwareVM(t *testing.T, guest string, mutate func(*Config)) (*VM, *SerialBuffer) {
	t.Helper()
	requireKVM(t)
	cfg := guestConfig(t, guest, 1)
	cfg.Personality = string(vcpu.PersonalityVMware)
	if mutate != nil {
		mutate(&cfg)
	}
	var out SerialBuffer
	vm, err := New(cfg, Options{Serial: &out, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { vm.Stop("test done") })
	return vm, &out
}

// vmwCall makes one IN on port through machine.PIO as the vCPU loop does,
// with the registers set first, and returns the I/O data and registers.
func vmwCall(t *testing.T, m *machine, port uint16, rax, rcx, rbx, rsi uint64) (uint32, balloon.Regs) {
	t.Helper()
	v := m.vcpus[0]
	r, err := v.Regs()
	if err != nil {
		t.Fatal(err)
	}
	rip := r.RIP
	r.RAX, r.RCX, r.RBX, r.RSI, r.RDX = rax, rcx, rbx, rsi, uint64(port)
	if err := v.SetRegs(r); err != nil {
		t.Fatal(err)
	}
	data := []byte{0xAA, 0xAA, 0xAA, 0xAA}
	m.PIO(v, port, data, false)
	r, err = v.Regs()
	if err != nil {
		t.Fatal(err)
	}
	if r.RIP != rip {
		t.Errorf("RIP moved from %#x to %#x: KVM would drop the IN's completion", rip, r.RIP)
	}
	return binary.LittleEndian.Uint32(data), balloon.Regs{RAX: r.RAX, RBX: r.RBX, RCX: r.RCX, RDX: r.RDX, RSI: r.RSI, RDI: r.RDI}
}

// TestVMwarePortPlumbing drives the ports through machine.PIO on a vCPU
// that has not run: the answer is in the I/O data and in RAX (this host's
// KVM takes RAX, hardware KVM the data), the other answer registers are
// set, and RIP is left alone.
func TestVMwarePortPlumbing(t *testing.T) {
	vm, _ := newVMwareVM(t, "hello", nil)
	m := vm.m
	data, r := vmwCall(t, m, balloon.BackdoorPort, balloon.BackdoorMagic, balloon.BackdoorGetVersion, 0xffffffff, 0)
	if data != 6 || r.RAX != 6 || r.RBX != balloon.BackdoorMagic || r.RCX != 2 {
		t.Errorf("GETVERSION: data %#x regs %+v", data, r)
	}
	data, r = vmwCall(t, m, balloon.BackdoorPort, balloon.BackdoorMagic, balloon.BackdoorGetHz, 0xffffffff, 0)
	hz := r.RBX<<32 | r.RAX
	if r.RBX == 0xffffffff || hz == 0 || data != uint32(r.RAX) || r.RCX != 1e9 {
		t.Errorf("GETHZ: data %#x regs %+v", data, r)
	}
	t.Logf("GETHZ: TSC %d Hz, APIC bus %d Hz", hz, r.RCX)
	data, r = vmwCall(t, m, balloon.BalloonPort, balloon.BalloonMagic, balloon.CmdStart, 0x3e, 0)
	if data != balloon.StatusSuccessWithCaps || r.RAX != balloon.StatusSuccessWithCaps || r.RCX != balloon.HostCaps {
		t.Errorf("START: data %#x regs %+v", data, r)
	}
	data, r = vmwCall(t, m, balloon.BalloonPort, 0x1234, balloon.CmdStart, 0x3e, 0)
	if data != 0xffffffff || r.RAX != 0xffffffff || r.RCX != balloon.CmdStart {
		t.Errorf("balloon port without the magic: data %#x regs %+v", data, r)
	}
	// Only a 4-byte IN is a call.
	for _, size := range []int{1, 2} {
		b := make([]byte, size)
		m.PIO(m.vcpus[0], balloon.BackdoorPort, b, false)
		for _, x := range b {
			if x != 0xFF {
				t.Errorf("%d-byte IN: %x, want all ones", size, b)
			}
		}
	}
	m.PIO(m.vcpus[0], balloon.BalloonPort, []byte{1, 2, 3, 4}, true) // dropped
	if st, err := vm.BalloonStats(); err != nil || st.Commands["start"] != 1 || st.Errors["bad_magic"] != 1 {
		t.Errorf("stats %+v, %v", st, err)
	}

	// Without the personality the ports are nobody's.
	plain, _ := newVMwareVM(t, "hello", func(c *Config) { c.Personality = "kvm" })
	b := []byte{0, 0, 0, 0}
	plain.m.PIO(plain.m.vcpus[0], balloon.BackdoorPort, b, false)
	if binary.LittleEndian.Uint32(b) != 0xffffffff {
		t.Errorf("kvm personality: backdoor read %x", b)
	}
	if _, err := plain.BalloonStats(); !errors.Is(err, ErrNoBalloon) {
		t.Errorf("kvm personality: BalloonStats: %v, want ErrNoBalloon", err)
	}
	if _, err := plain.SetBalloonTarget(4096); !errors.Is(err, ErrNoBalloon) {
		t.Errorf("kvm personality: SetBalloonTarget: %v, want ErrNoBalloon", err)
	}
	// Backdoor yes, balloon no.
	nb, _ := newVMwareVM(t, "hello", func(c *Config) { c.Balloon = BalloonNone })
	if data, _ := vmwCall(t, nb.m, balloon.BackdoorPort, balloon.BackdoorMagic, balloon.BackdoorGetVersion, 0, 0); data != 6 {
		t.Errorf("balloon none: GETVERSION %#x", data)
	}
	if data, _ := vmwCall(t, nb.m, balloon.BalloonPort, balloon.BalloonMagic, balloon.CmdStart, 0x3e, 0); data != 0xffffffff {
		t.Errorf("balloon none: the balloon port answered %#x", data)
	}
}

// TestBalloonTargetSurvivesReboot: a guest reboot builds a new machine; the
// host's target carries over to its balloon.
func TestBalloonTargetSurvivesReboot(t *testing.T) {
	vm, _ := newVMwareVM(t, "hello", nil)
	if _, err := vm.SetBalloonTarget(8 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.SetBalloonTarget(1 << 40); !errors.Is(err, balloon.ErrTarget) {
		t.Errorf("target beyond RAM: %v, want balloon.ErrTarget", err)
	}
	nm, err := newMachine(vm.cfg, vm.kvm.Fd(), io.Discard, vm, vm.log)
	if err != nil {
		t.Fatal(err)
	}
	defer nm.close()
	if got := nm.vmw.balloon.Ledger().Target(); got != 8<<20 {
		t.Errorf("new machine's target %d, want %d", got, 8<<20)
	}
}

// guestResident is how much of the guest's RAM the host backs now, by
// mincore: what the balloon really gave back, not what it counted.
func guestResident(t *testing.T, m *machine) uint64 {
	t.Helper()
	var n uint64
	for _, r := range m.mem.Regions() {
		b, err := m.mem.Resident(r.GPA, r.Size())
		if err != nil {
			t.Fatal(err)
		}
		n += b
	}
	return n
}

// processRSS is this process's resident memory (/proc/self/smaps_rollup),
// for the report: Go's own heap moves it too, so the test asserts on
// guestResident.
func processRSS(t *testing.T) uint64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps_rollup")
	if err != nil {
		t.Logf("no smaps_rollup: %v", err)
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "Rss:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestVMwareBalloonGuest boots vmwballoon.S with the VMware personality:
// the guest detects VMware, checks the backdoor, negotiates the balloon and
// waits for a target, which the test sets through the VM's Go API (the
// code behind PUT /vm/balloon) while the vCPU polls. Then it checks that
// the 4 MiB the guest locked really left the host (mincore over guest RAM,
// and the locked ranges themselves), lets the guest deflate, makes the host
// answer ERROR_RESET once, and waits for the guest's PASS.
func TestVMwareBalloonGuest(t *testing.T) {
	vm, out := newVMwareVM(t, "vmwballoon", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	wait := func(line string) { t.Helper(); waitSerial(ctx, t, vm, out, line) }
	m := vm.m

	wait("vmwballoon: touched 4 MiB, polling GET_TARGET")
	guestBefore, rssBefore := guestResident(t, m), processRSS(t)
	const locked = 4 << 20
	st, err := vm.SetBalloonTarget(locked)
	if err != nil {
		t.Fatalf("SetBalloonTarget: %v", err)
	}
	if st.TargetBytes != locked || st.Kind != "vmware" || st.VMware == nil || !st.VMware.Negotiated {
		t.Errorf("stats after SetBalloonTarget: %+v", st)
	}

	wait("vmwballoon: locked 1024\n")
	guestAfter, rssAfter := guestResident(t, m), processRSS(t)
	t.Logf("guest RAM resident (mincore): before inflation %d KiB, after %d KiB: %d KiB given back",
		guestBefore>>10, guestAfter>>10, int64(guestBefore-guestAfter)>>10)
	t.Logf("process RSS (smaps_rollup): before %d KiB, after %d KiB", rssBefore>>10, rssAfter>>10)
	if guestBefore < guestAfter || guestBefore-guestAfter < locked-64<<10 {
		t.Errorf("guest RAM resident fell by %d KiB, want about %d KiB", int64(guestBefore-guestAfter)>>10, locked>>10)
	}
	if r, err := m.mem.Resident(16<<20, locked); err != nil || r != 0 {
		t.Errorf("the locked range [16M, 20M): %d bytes resident (%v), want 0", r, err)
	}
	st, err = vm.BalloonStats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Held4K != 512 || st.Held2M != 1 || st.HeldBytes != locked || st.ReturnedBytes != locked {
		t.Errorf("inflated: held %d 4K + %d 2M = %d bytes, returned %d", st.Held4K, st.Held2M, st.HeldBytes, st.ReturnedBytes)
	}
	for kind, n := range map[string]uint64{"page_already_held": 3, "page_misaligned": 1, "page_not_ram": 1, "page_not_held": 1} {
		if st.Errors[kind] != n {
			t.Errorf("errors[%s] = %d, want %d (all: %v)", kind, st.Errors[kind], n, st.Errors)
		}
	}
	for cmd, n := range map[string]uint64{"start": 1, "guest_id": 1, "vmci_doorbell_set": 1,
		"batched_2m_lock": 3, "batched_lock": 4, "batched_unlock": 1} {
		if st.Commands[cmd] != n {
			t.Errorf("commands[%s] = %d, want %d (all: %v)", cmd, st.Commands[cmd], n, st.Commands)
		}
	}

	if _, err := vm.SetBalloonTarget(0); err != nil {
		t.Fatal(err)
	}
	wait("vmwballoon: deflated")
	if st, _ := vm.BalloonStats(); st.Held4K != 1 || st.Held2M != 0 {
		t.Errorf("deflated: held %d 4K and %d 2M pages, want the one page to be popped", st.Held4K, st.Held2M)
	}
	m.vmw.balloon.RequestReset()

	res, err := vm.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v\nserial:\n%s", err, out.String())
	}
	transcript := out.String()
	expect(t, transcript, res, guesttest.PassStatus,
		`vmwballoon: CPUID 0x40000000 "VMwareVMware", max leaf 0x40000010`,
		"kHz, hypercall mode 0 (I/O port)",
		"vmwballoon: no KVM signature in 0x40000000-0x4000ff00",
		"vmwballoon: invariant TSC",
		"vmwballoon: backdoor GETVERSION: version 6, product type 2",
		"vmwballoon: backdoor GETHZ: TSC",
		"vmwballoon: backdoor STEALCLOCK: not available",
		"(LEGACY_X2APIC matches CPUID.1:ECX.x2APIC)",
		"vmwballoon: backdoor: unknown command and wrong magic read 0xffffffff",
		"vmwballoon: START(0x3e) granted 0x0000002e, GUEST_ID(1) sent",
		"vmwballoon: GET_TARGET: 1024 frames",
		"vmwballoon: BATCHED_2M_LOCK of 1 page: status 0, RBX = target",
		"vmwballoon: BATCHED_LOCK of 512 pages: every status 0, RBX = target",
		"vmwballoon: lock a locked page: status 3",
		"vmwballoon: lock a 4K page inside the locked 2M page: status 3",
		"vmwballoon: lock a 2M page over locked 4K pages: status 3",
		"vmwballoon: lock a misaligned 2M page: status 2",
		"vmwballoon: lock the page past the end of RAM: status 2",
		"vmwballoon: unlock a page never locked: status 4",
		"vmwballoon: unlocked 512 4K pages and 1 2M page: every status 0, RBX = 0",
		"vmwballoon: unlocked pages read as zero and take writes again",
		"vmwballoon: GET_TARGET answered ERROR_RESET (7)",
		"vmwballoon: after the reset the popped page locked again (status 0) and unlocked",
		guesttest.PassLine("vmwballoon"))
	t.Logf("guest transcript:\n%s", transcript)

	st, err = vm.BalloonStats()
	if err != nil {
		t.Fatal(err)
	}
	if st.HeldBytes != 0 || st.VMware.Starts != 2 || st.VMware.Resets != 1 || !st.VMware.Negotiated {
		t.Errorf("final: held %d, protocol %+v", st.HeldBytes, *st.VMware)
	}
	// The 4 MiB, the page locked before the reset and the same page again
	// after it.
	if want := uint64(locked + 2*layout.PageSize); st.ReturnedBytes != want {
		t.Errorf("final: returned %d bytes, want %d", st.ReturnedBytes, want)
	}
	t.Logf("final stats: %s", statsLine(st))
	if _, err := vm.SetBalloonTarget(4096); !errors.Is(err, ErrState) {
		t.Errorf("SetBalloonTarget on a stopped VM: %v, want ErrState", err)
	}
}

func statsLine(st BalloonStats) string {
	var b strings.Builder
	fmt.Fprintf(&b, "target %d held %d (4K %d, 2M %d) returned %d commands", st.TargetBytes, st.HeldBytes, st.Held4K, st.Held2M, st.ReturnedBytes)
	for _, name := range balloon.VMwareCommands {
		if n := st.Commands[name]; n != 0 {
			fmt.Fprintf(&b, " %s=%d", name, n)
		}
	}
	b.WriteString(" errors")
	for k, n := range st.Errors {
		if n != 0 {
			fmt.Fprintf(&b, " %s=%d", k, n)
		}
	}
	return b.String()
}

// waitSerial waits until the guest printed line, failing with the VM's
// result and console when ctx ends first.
func waitSerial(ctx context.Context, t *testing.T, vm *VM, out *SerialBuffer, line string) {
	t.Helper()
	if err := out.WaitFor(ctx, line); err != nil {
		res, _ := vm.Result()
		t.Fatalf("waiting for %q: %v (result %+v)\nserial:\n%s", line, err, res, out.String())
	}
}
