package guesttest

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Timeouts. Measured on the reference machine (KVM without hardware
// virtualization: guest kernel code is emulated at ~1 MIPS): microvm runs
// take ~0.1 s, pc/q35 ~4-5 s because SeaBIOS and the PVH option ROM run
// first. The margins are generous on purpose.
const (
	microvmTimeout  = 60 * time.Second
	firmwareTimeout = 3 * time.Minute
	probeTimeout    = 60 * time.Second
)

func requireQEMU(t *testing.T) {
	t.Helper()
	if err := QEMUAvailable(); err != nil {
		t.Skipf("skipping: %v", err)
	}
}

func runQEMU(t *testing.T, timeout time.Duration, elfPath, machine string, smp int, extra ...string) QEMUResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := RunQEMU(ctx, elfPath, machine, smp, extra...)
	t.Logf("%s", strings.Join(res.Args, " "))
	t.Logf("%s, %d vCPUs: %s (status %d) in %v; serial:\n%s",
		machine, smp, res.Ending, res.ExitStatus, res.Duration.Round(time.Millisecond), res.Serial)
	if err != nil {
		t.Fatalf("RunQEMU: %v", err)
	}
	return res
}

func expectVerdict(t *testing.T, res QEMUResult, name string, pass bool) {
	t.Helper()
	status, line := PassStatus, PassLine(name)
	if !pass {
		status = FailStatus
	}
	if res.ExitStatus != status {
		t.Errorf("exit status = %d, want %d\nqemu log:\n%s", res.ExitStatus, status, res.Log)
	}
	if pass && !res.HasLine(line) {
		t.Errorf("serial output lacks %q", line)
	}
	if !pass && !strings.Contains(res.Serial, FailPrefix(name)) {
		t.Errorf("serial output lacks %q", FailPrefix(name))
	}
}

func expectLines(t *testing.T, res QEMUResult, substrings ...string) {
	t.Helper()
	for _, s := range substrings {
		if !strings.Contains(res.Serial, s) {
			t.Errorf("serial output lacks %q", s)
		}
	}
}

// TestGuestsBuild assembles every guest and checks each image's PVH note:
// an entry point equal to the ELF entry, inside a loadable segment at or
// above LoadAddr.
func TestGuestsBuild(t *testing.T) {
	names, err := Guests()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"hello", "smp", "s5", "probe", "selftest", "pwrbtn"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("guest %q missing from %v", want, names)
		}
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			path := BuildT(t, name)
			entry, err := PVHEntry(path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := elf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
				t.Errorf("image is %v %v, want ELFCLASS64 EM_X86_64", f.Class, f.Machine)
			}
			if entry != f.Entry {
				t.Errorf("PVH entry %#x != ELF entry %#x", entry, f.Entry)
			}
			inLoad := false
			for _, p := range f.Progs {
				if p.Type != elf.PT_LOAD {
					continue
				}
				if p.Paddr < LoadAddr {
					t.Errorf("PT_LOAD at %#x below LoadAddr %#x", p.Paddr, LoadAddr)
				}
				if entry >= p.Paddr && entry < p.Paddr+p.Filesz && p.Flags&elf.PF_X != 0 {
					inLoad = true
				}
			}
			if !inLoad {
				t.Errorf("PVH entry %#x is not in an executable PT_LOAD", entry)
			}
		})
	}
}

// TestBuiltinScriptMatchesBuild checks that builtin/build.sh, which makes
// the self-test ELF embedded in kvmm, produces the same bytes as Build, and
// that both are deterministic.
func TestBuiltinScriptMatchesBuild(t *testing.T) {
	path := BuildT(t, "selftest")
	again, err := Build(t.TempDir(), "selftest")
	if err != nil {
		t.Fatal(err)
	}
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "selftest.elf")
	cmd := exec.Command("sh", filepath.Join(root, "builtin", "build.sh"), script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("builtin/build.sh: %v\n%s", err, out)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{again, script} {
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s (%d vs %d bytes)", p, path, len(got), len(want))
		}
	}
}

func TestHelloQEMU(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	path := BuildT(t, "hello")
	res := runQEMU(t, microvmTimeout, path, "microvm", 1)
	expectVerdict(t, res, "hello", true)
	expectLines(t, res, "hello from the test guest\n", "memmap entries=", " MiB)\n")
}

func TestHelloFailQEMU(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	path := BuildT(t, "hello")
	res := runQEMU(t, microvmTimeout, path, "microvm", 1, "-append", "hello.fail")
	expectVerdict(t, res, "hello", false)
}

func TestSMPQEMU(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	path := BuildT(t, "smp")
	for _, tc := range []struct {
		name, machine string
		timeout       time.Duration
		extra         []string
	}{
		{"microvm", "microvm", microvmTimeout, nil},
		// The RSDP scan of 0xE0000-0xFFFFF instead of rsdp_paddr.
		{"microvm-rsdpscan", "microvm", microvmTimeout, []string{"-append", "guest.rsdpscan"}},
		// Firmware-built tables (SeaBIOS) and an RSDT/XSDT from QEMU's q35.
		{"q35", "q35", firmwareTimeout, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := runQEMU(t, tc.timeout, path, tc.machine, 2, tc.extra...)
			expectVerdict(t, res, "smp", true)
			expectLines(t, res, "cpus=2 ", "aps started=1\n")
		})
	}
}

func TestS5QEMU(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	path := BuildT(t, "s5")
	for _, machine := range []string{"pc", "q35"} {
		t.Run(machine, func(t *testing.T) {
			t.Parallel()
			res := runQEMU(t, firmwareTimeout, path, machine, 1)
			// QEMU exits with status 0 on an ACPI power-off.
			if res.ExitStatus != 0 {
				t.Errorf("exit status = %d, want 0 (power-off)\nqemu log:\n%s", res.ExitStatus, res.Log)
			}
			expectLines(t, res, "_S5_ SLP_TYPa=", "writing SLP_TYP")
			if strings.Contains(res.Serial, "FAIL ") {
				t.Errorf("guest reported a failure")
			}
		})
	}
	// microvm is hardware-reduced (no PM1 blocks): the guest must say so.
	t.Run("microvm", func(t *testing.T) {
		t.Parallel()
		res := runQEMU(t, microvmTimeout, path, "microvm", 1)
		expectVerdict(t, res, "s5", false)
		expectLines(t, res, "hardware-reduced")
	})
}

// TestSelfTestQEMU runs the built-in self-test (kvmm's guest when no kernel
// is given) under QEMU, its oracle. A passing self-test prints its report,
// "PASS selftest" and powers off through ACPI S5 (QEMU: status 0), so it
// needs a machine with the ACPI PM block: q35 (ICH9) or pc (PIIX4).
func TestSelfTestQEMU(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	path := BuildT(t, "selftest")
	for _, tc := range []struct {
		name, machine string
		smp           int
		cpus          string
	}{
		// The reference configuration: ICH9 PM, MCFG, HPET, two vCPUs.
		{"q35-smp2", "q35", 2, "cpus=2 started=1\n"},
		// PIIX4 PM and a single vCPU (no AP to start).
		{"pc-smp1", "pc", 1, "cpus=1 started=0\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := runQEMU(t, firmwareTimeout, path, tc.machine, tc.smp)
			if res.ExitStatus != 0 {
				t.Errorf("exit status = %d, want 0 (ACPI power-off)\nqemu log:\n%s", res.ExitStatus, res.Log)
			}
			if !res.HasLine(PassLine("selftest")) {
				t.Errorf("serial output lacks %q", PassLine("selftest"))
			}
			lines := res.Lines()
			if n := len(lines); n == 0 || lines[n-1] != PassLine("selftest") {
				t.Errorf("the last line is not %q", PassLine("selftest"))
			}
			expectLines(t, res, "kvmm self-test\n", "start_info ", "memmap entries=",
				" type 1 (RAM)\n", "RAM total ", "ACPI: RSDP ", "RSDP revision ",
				"  FACP ", "  APIC ", "DSDT ", "FACS ", " checksum ok\n",
				tc.cpus, "_S5_ SLP_TYPa=")
			for _, bad := range []string{"FAIL ", "BAD CHECKSUM", "BAD LENGTH"} {
				if strings.Contains(res.Serial, bad) {
					t.Errorf("serial output contains %q", bad)
				}
			}
		})
	}
	// microvm is hardware-reduced: everything up to the vCPUs passes (and
	// the XSDT path is used), then there is no PM1a_CNT to power off with.
	t.Run("microvm-smp2", func(t *testing.T) {
		t.Parallel()
		res := runQEMU(t, microvmTimeout, path, "microvm", 2)
		expectVerdict(t, res, "selftest", false)
		expectLines(t, res, "XSDT ", "cpus=2 started=1\n", "hardware-reduced")
		if res.HasLine(PassLine("selftest")) {
			t.Errorf("serial output has %q", PassLine("selftest"))
		}
	})
}

// TestProbeQEMU is informational: on a host whose KVM cannot emulate XSAVE,
// CMPXCHG16B or INT3/IRETQ the run ends with a KVM internal error and the
// last PROBE line names the instruction. It asserts only that the guest got
// to long mode and that the run ended.
func TestProbeQEMU(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	path := BuildT(t, "probe")
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	res, err := RunQEMU(ctx, path, "microvm", 1)
	t.Logf("%s", strings.Join(res.Args, " "))
	t.Logf("probe: %s (status %d) in %v; serial:\n%s",
		res.Ending, res.ExitStatus, res.Duration.Round(time.Millisecond), res.Serial)
	switch res.Ending {
	case Exited:
		if err != nil {
			t.Fatalf("RunQEMU: %v", err)
		}
		if res.ExitStatus == 0 {
			t.Errorf("exit status 0: the probe neither passed nor stopped")
		}
	case InternalError, TimedOut:
		// The expected result on a host without hardware virtualization.
	}
	expectLines(t, res, "PROBE start\n", "PROBE longmode ok\n")
	last := ""
	for _, l := range res.Lines() {
		if strings.HasPrefix(l, "PROBE ") {
			last = l
		}
	}
	t.Logf("last probe line: %q", last)
}

// TestPowerButtonQEMU runs pwrbtn under QEMU, its oracle, on the pc machine
// (PIIX4 PM: the SCI is IRQ 9, level, active high in the MADT override).
// Once the guest prints its ready line, the monitor's system_powerdown
// presses the power button (PWRBTN_STS, and an SCI because the guest set
// PWRBTN_EN); the guest's SCI handler must see it and power off (status 0).
// RunQEMU cannot be used: the press has to wait for a line of the serial
// output while QEMU runs.
func TestPowerButtonQEMU(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	path := BuildT(t, "pwrbtn")
	monitor := filepath.Join(t.TempDir(), "monitor.sock")
	ctx, cancel := context.WithTimeout(context.Background(), firmwareTimeout)
	defer cancel()
	args := QEMUArgs(path, "pc", 1, "-monitor", "unix:"+monitor+",server=on,wait=off")
	cmd := exec.CommandContext(ctx, QEMUBinary, args...)
	serial := &syncBuffer{marker: []byte("pwrbtn: ready\n"), hit: make(chan struct{})}
	qemuLog := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = serial, qemuLog
	cmd.WaitDelay = killWait
	t.Logf("%s %s", QEMUBinary, strings.Join(args, " "))
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", QEMUBinary, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	report := func() string {
		return fmt.Sprintf("serial:\n%s\nqemu log:\n%s", serial.String(), qemuLog.String())
	}

	select {
	case <-serial.hit:
	case err := <-exited:
		t.Fatalf("QEMU exited (%v) before the guest was ready\n%s", err, report())
	case <-ctx.Done():
		<-exited
		t.Fatalf("the guest was not ready within %v\n%s", firmwareTimeout, report())
	}
	ready := time.Now()
	conn, err := net.Dial("unix", monitor)
	if err != nil {
		t.Fatalf("connecting to the QEMU monitor: %v", err)
	}
	defer conn.Close() // open until QEMU exits, so the command is surely read
	if _, err := io.WriteString(conn, "system_powerdown\n"); err != nil {
		t.Fatalf("writing to the QEMU monitor: %v", err)
	}

	var waitErr error
	select {
	case waitErr = <-exited:
	case <-ctx.Done():
		<-exited // the context kills QEMU
		t.Fatalf("QEMU still running %v after the power button\n%s", firmwareTimeout, report())
	}
	t.Logf("ready after %v, powered off %v after the button; serial:\n%s", ready.Sub(start).Round(time.Millisecond),
		time.Since(ready).Round(time.Millisecond), serial.String())
	if waitErr != nil {
		t.Errorf("QEMU: %v, want exit status 0 (ACPI power-off)\n%s", waitErr, report())
	}
	res := QEMUResult{Serial: serial.String()}
	expectLines(t, res, "SCI irq=9 gsi=9 ", "pwrbtn: power button pressed\n")
	if !res.HasLine(PassLine("pwrbtn")) {
		t.Errorf("serial output lacks %q\n%s", PassLine("pwrbtn"), report())
	}
	if strings.Contains(res.Serial, "FAIL ") {
		t.Errorf("guest reported a failure\n%s", report())
	}
}

// TestS3QEMU runs s3 under QEMU, its oracle, on the pc machine (PIIX4 PM,
// \_S3_ = {1, ...} in QEMU's DSDT unless PIIX4_PM.disable_s3=1; the global
// exists in QEMU 7.2 and defaults to 0, it is set explicitly here). The
// guest suspends like Linux (FACS waking vector, SLP_TYP|SLP_EN); QEMU
// pauses the VM ("info status": suspended) and sets CMOS 0x0F = 0xFE; on a
// wake it resets the machine, sets PM1_STS (WAK_STS|PWRBTN_STS for
// system_wakeup, WAK_STS|RTC_STS for the RTC alarm) and SeaBIOS jumps to the
// vector in real mode at CS = vector >> 4, IP = vector & 0xF.
//
// Each case waits for "s3: entering S3 (cycle N)", polls the monitor until
// the VM is suspended (a system_wakeup sent earlier is refused: "guest is
// not in suspended state"), then sends system_wakeup, or, with s3.rtc,
// lets the guest's CMOS alarm wake it. Measured here (pc, emulated
// firmware): boot to the first suspend ~3-6 s, suspend ~10 ms after the
// line, resume line ~10 ms after system_wakeup (SeaBIOS's resume path is
// short), the RTC wake 1-2 s after the suspend (the alarm is 2 s ahead in
// whole seconds).
func TestS3QEMU(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	path := BuildT(t, "s3")
	for _, tc := range []struct {
		name, cmdline string
		cycles        int
		rtc           bool // the RTC alarm wakes it, not system_wakeup
	}{
		{"host-wake", "", 1, false},
		{"host-wake-2-cycles", "s3.cycles=2", 2, false},
		{"rtc-wake", "s3.rtc", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runS3QEMU(t, path, tc.cmdline, tc.cycles, tc.rtc)
		})
	}
	// Without \_S3_ in the DSDT the guest must refuse to suspend.
	t.Run("s3-disabled", func(t *testing.T) {
		t.Parallel()
		res := runQEMU(t, firmwareTimeout, path, "pc", 1, "-global", "PIIX4_PM.disable_s3=1")
		expectVerdict(t, res, "s3", false)
		expectLines(t, res, "FAIL s3: no \\_S3_\n")
	})
}

// s3WakeTimeout bounds each wait for a suspend or a wake within a case.
const s3WakeTimeout = 30 * time.Second

func runS3QEMU(t *testing.T, path, cmdline string, cycles int, rtc bool) {
	t.Helper()
	monitor := filepath.Join(t.TempDir(), "monitor.sock")
	ctx, cancel := context.WithTimeout(context.Background(), firmwareTimeout)
	defer cancel()
	extra := []string{"-global", "PIIX4_PM.disable_s3=0",
		"-monitor", "unix:" + monitor + ",server=on,wait=off"}
	if cmdline != "" {
		extra = append(extra, "-append", cmdline)
	}
	args := QEMUArgs(path, "pc", 1, extra...)
	cmd := exec.CommandContext(ctx, QEMUBinary, args...)
	serial, qemuLog := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = serial, qemuLog
	cmd.WaitDelay = killWait
	t.Logf("%s %s", QEMUBinary, strings.Join(args, " "))
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", QEMUBinary, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var waitErr error
	done := false
	// On any failure: stop QEMU, then show everything.
	fatal := func(format string, args ...any) {
		t.Helper()
		if !done {
			cancel()
			waitErr = <-exited
		}
		t.Fatalf("%s (after %v)\nserial:\n%s\nqemu log:\n%s", fmt.Sprintf(format, args...),
			time.Since(start).Round(time.Millisecond), serial.String(), qemuLog.String())
	}
	// waitSerial polls the serial output for s until the deadline or exit.
	waitSerial := func(s string, limit time.Duration) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for !strings.Contains(serial.String(), s) {
			select {
			case waitErr = <-exited:
				done = true
				fatal("QEMU exited (%v) before the serial output had %q", waitErr, s)
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				fatal("no %q on the serial output within %v", s, limit)
			}
		}
	}

	var mon *s3Monitor
	var timings []string
	for n := 1; n <= cycles; n++ {
		limit := s3WakeTimeout
		if n == 1 {
			limit = firmwareTimeout / 2 // the boot through SeaBIOS
		}
		entering := fmt.Sprintf("s3: entering S3 (cycle %d)\n", n)
		waitSerial(entering, limit)
		tEnter := time.Now()
		if mon == nil {
			m, err := dialS3Monitor(monitor)
			if err != nil {
				fatal("QEMU monitor: %v", err)
			}
			mon = m
			defer mon.conn.Close()
		}
		// Suspended? (The line is printed before the SLP_EN write.)
		for {
			out, err := mon.command("info status")
			if err != nil {
				fatal("QEMU monitor: info status: %v", err)
			}
			if strings.Contains(out, "suspended") {
				break
			}
			if time.Since(tEnter) > s3WakeTimeout {
				fatal("cycle %d: not suspended %v after %q (info status: %q)", n, s3WakeTimeout, entering, out)
			}
			time.Sleep(10 * time.Millisecond)
		}
		tSuspended := time.Now()
		if !rtc {
			out, err := mon.command("system_wakeup")
			if err != nil {
				fatal("QEMU monitor: system_wakeup: %v", err)
			}
			if strings.Contains(out, "rror") || strings.Contains(out, "Unable") {
				fatal("system_wakeup refused: %q", out)
			}
		}
		// The n-th resume line.
		deadline := time.Now().Add(s3WakeTimeout)
		for strings.Count(serial.String(), "s3: resumed in real mode") < n {
			if time.Now().After(deadline) {
				fatal("cycle %d: no resume within %v of the suspend (rtc=%v)", n, s3WakeTimeout, rtc)
			}
			select {
			case waitErr = <-exited:
				done = true
				fatal("QEMU exited (%v) during cycle %d", waitErr, n)
			case <-time.After(10 * time.Millisecond):
			}
		}
		timings = append(timings, fmt.Sprintf("cycle %d: line at %v, suspended +%v, resumed +%v",
			n, tEnter.Sub(start).Round(time.Millisecond), tSuspended.Sub(tEnter).Round(time.Millisecond),
			time.Since(tSuspended).Round(time.Millisecond)))
	}
	select {
	case waitErr = <-exited:
		done = true
	case <-time.After(s3WakeTimeout):
		fatal("QEMU still running %v after the last resume", s3WakeTimeout)
	}
	t.Logf("%s; exit after %v; serial:\n%s", strings.Join(timings, "; "),
		time.Since(start).Round(time.Millisecond), serial.String())

	res := QEMUResult{Serial: serial.String(), Log: qemuLog.String(), ExitStatus: -1}
	if waitErr == nil {
		res.ExitStatus = 0
	} else if exitErr, ok := waitErr.(*exec.ExitError); ok && exitErr.Exited() {
		res.ExitStatus = exitErr.ExitCode()
	}
	expectVerdict(t, res, "s3", true)
	resumed := 0
	for _, l := range res.Lines() {
		i := strings.Index(l, "s3: resumed in real mode at ")
		if i < 0 {
			continue
		}
		resumed++
		var cs, ip, sts uint
		if _, err := fmt.Sscanf(l[i:], "s3: resumed in real mode at CS:IP=%4x:%4x, PM1_STS=0x%4x", &cs, &ip, &sts); err != nil {
			t.Errorf("cannot parse %q: %v", l, err)
			continue
		}
		// SeaBIOS: FLATPTR_TO_SEGOFF(vector), vector 0x3000.
		if cs != 0x300 || ip != 0 {
			t.Errorf("%q: want CS:IP=0300:0000 (SeaBIOS's split of the vector 0x3000)", l)
		}
		reason, name := uint(1<<8), "PWRBTN_STS"
		if rtc {
			reason, name = 1<<10, "RTC_STS"
		}
		if sts&(1<<15) == 0 || sts&reason == 0 {
			t.Errorf("%q: want WAK_STS|%s", l, name)
		}
	}
	if resumed != cycles {
		t.Errorf("%d resume lines, want %d", resumed, cycles)
	}
	for n := 1; n <= cycles; n++ {
		expectLines(t, res, fmt.Sprintf("s3: cycle %d done\n", n))
	}
	if rtc {
		expectLines(t, res, "rtc: now ")
	}
	if strings.Contains(res.Serial, "FAIL ") {
		t.Errorf("guest reported a failure")
	}
}

// s3Monitor is a connection to QEMU's human monitor (HMP).
type s3Monitor struct {
	conn net.Conn
	buf  []byte
}

func dialS3Monitor(path string) (*s3Monitor, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	m := &s3Monitor{conn: conn}
	if _, err := m.prompt(); err != nil { // the banner
		conn.Close()
		return nil, err
	}
	return m, nil
}

// command sends one HMP command and returns its output up to the next
// prompt (with the monitor's echo and terminal escapes).
func (m *s3Monitor) command(c string) (string, error) {
	if _, err := io.WriteString(m.conn, c+"\n"); err != nil {
		return "", err
	}
	return m.prompt()
}

func (m *s3Monitor) prompt() (string, error) {
	const prompt = "(qemu) "
	if err := m.conn.SetReadDeadline(time.Now().Add(s3WakeTimeout)); err != nil {
		return "", err
	}
	chunk := make([]byte, 4096)
	for {
		if i := bytes.Index(m.buf, []byte(prompt)); i >= 0 {
			out := string(m.buf[:i])
			m.buf = m.buf[i+len(prompt):]
			return out, nil
		}
		n, err := m.conn.Read(chunk)
		m.buf = append(m.buf, chunk[:n]...)
		if err != nil {
			return string(m.buf), err
		}
	}
}
