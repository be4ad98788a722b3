package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvmm/kvmm/vmm"
	"github.com/kvmm/kvmm/vmm/api"
	"github.com/kvmm/kvmm/vmm/api/apitest"
)

// serveFake serves a fake VM's API on a socket in a fresh short directory
// (unix socket paths are limited to 108 bytes).
func serveFake(t *testing.T) (*apitest.FakeVM, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "kvmm-ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	vm := apitest.New()
	srv := api.NewServer(vm, api.Options{})
	path := filepath.Join(dir, "vm.sock")
	if err := srv.Start(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return vm, path
}

// kvmm runs the command line and returns its exit status and output.
func kvmm(t *testing.T, args ...string) (status int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	status = Main(args, nil, &out, &errOut)
	return status, out.String(), errOut.String()
}

// ctl runs `kvmm ctl --sock sock args...` and requires success.
func ctl(t *testing.T, sock string, args ...string) string {
	t.Helper()
	status, out, errOut := kvmm(t, append([]string{"ctl", "--sock", sock}, args...)...)
	if status != 0 || errOut != "" {
		t.Fatalf("kvmm ctl %s: status %d, stderr %q", strings.Join(args, " "), status, errOut)
	}
	return out
}

func jsonInto[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("-o json output %q: %v", s, err)
	}
	return v
}

func TestCtlStatus(t *testing.T) {
	_, sock := serveFake(t)
	out := ctl(t, sock, "status")
	for _, want := range []string{"state    running\n", "vcpus    2\n", "memory   128M\n",
		"kernel   (built-in self-test guest)\n", "uptime   "} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	info := jsonInto[api.VMInfo](t, ctl(t, sock, "status", "-o", "json"))
	if info.State != vmm.StateRunning || info.VCPUs != 2 || info.MemoryBytes != 128<<20 {
		t.Errorf("status -o json: %+v", info)
	}
}

func TestCtlPauseResume(t *testing.T) {
	vm, sock := serveFake(t)
	if out := ctl(t, sock, "pause"); out != "paused (took 100µs)\n" {
		t.Errorf("pause printed %q", out)
	}
	if s := vm.State(); s != vmm.StatePaused {
		t.Fatalf("VM is %s after pause", s)
	}
	if out := ctl(t, sock, "resume"); out != "running (took 50µs)\n" {
		t.Errorf("resume printed %q", out)
	}
	r := jsonInto[api.StateResponse](t, ctl(t, sock, "-o", "json", "pause"))
	if r.State != vmm.StatePaused || r.Previous != vmm.StateRunning || r.TookNS != apitest.PauseLatency {
		t.Errorf("pause -o json: %+v", r)
	}
}

func TestCtlWakeAndPCI(t *testing.T) {
	vm, sock := serveFake(t)
	vm.Suspend()
	if out := ctl(t, sock, "wake"); out != "running (took 200µs)\n" {
		t.Errorf("wake printed %q", out)
	}
	if out := ctl(t, sock, "pci"); out != apitest.PCIDumpText {
		t.Errorf("pci printed %q", out)
	}
	if out := ctl(t, sock, "pci", "-x"); out != apitest.PCIDumpText {
		t.Errorf("pci -x printed %q", out)
	}
}

func TestCtlPower(t *testing.T) {
	vm, sock := serveFake(t)
	if out := ctl(t, sock, "power", "button"); out != "power button pressed (VM is running)\n" {
		t.Errorf("power button printed %q", out)
	}
	if out := ctl(t, sock, "power", "reset"); out != "reset (VM is running)\n" {
		t.Errorf("power reset printed %q", out)
	}
	r := jsonInto[api.PowerResponse](t, ctl(t, sock, "power", "shutdown", "-o", "json"))
	if r.Action != api.PowerShutdown || r.State != vmm.StateStopped {
		t.Errorf("power shutdown -o json: %+v", r)
	}
	presses, resets, stops := vm.Counts()
	if presses != 1 || resets != 1 || len(stops) != 1 {
		t.Errorf("presses %d, resets %d, stops %v", presses, resets, stops)
	}
}

func TestCtlMetrics(t *testing.T) {
	_, sock := serveFake(t)
	out := ctl(t, sock, "metrics")
	for _, want := range []string{"EXIT REASON", "io ", "VCPU", "RUN TIME", "I/O PORTS",
		"0x80-0x80", "post", "0x3f8-0x3ff", "serial-com1", "MMIO", "(none)"} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics output lacks %q:\n%s", want, out)
		}
	}
	out = ctl(t, sock, "metrics", "--top", "1")
	if !strings.Contains(out, "post") || strings.Contains(out, "serial-com1") {
		t.Errorf("metrics --top 1 is not just the busiest range:\n%s", out)
	}
	m := jsonInto[vmm.Metrics](t, ctl(t, sock, "metrics", "-o", "json", "--top", "2"))
	if len(m.PIO) != 2 || m.PIO[0].Name != "post" || len(m.VCPUs) != 2 {
		t.Errorf("metrics -o json --top 2: %+v", m)
	}
}

// runCtlAsync runs a ctl command that keeps running (events) and returns
// its output so far and a channel with its exit status.
func runCtlAsync(t *testing.T, args ...string) (*vmm.SerialBuffer, <-chan int, *vmm.SerialBuffer) {
	t.Helper()
	var out, errOut vmm.SerialBuffer
	done := make(chan int, 1)
	go func() { done <- Main(append([]string{"ctl"}, args...), nil, &out, &errOut) }()
	return &out, done, &errOut
}

func waitOutput(t *testing.T, out *vmm.SerialBuffer, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := out.WaitFor(ctx, want); err != nil {
		t.Fatalf("output lacks %q after 5s:\n%s", want, out.String())
	}
}

func waitExit(t *testing.T, done <-chan int) int {
	t.Helper()
	select {
	case s := <-done:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("kvmm ctl events did not exit")
		return -1
	}
}

func TestCtlEvents(t *testing.T) {
	vm, sock := serveFake(t)
	out, done, errOut := runCtlAsync(t, "--sock", sock, "events")
	waitOutput(t, out, " state running: current state\n")
	vm.Publish(vmm.Event{Type: "power-button"})
	waitOutput(t, out, " power-button\n")
	vm.StopWith(0, "guest powered off (ACPI S5)")
	if s := waitExit(t, done); s != 0 || errOut.String() != "" {
		t.Fatalf("events exited %d, stderr %q", s, errOut.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[2], " state stopped status=0: guest powered off (ACPI S5)") {
		t.Errorf("events output:\n%s", out.String())
	}
	for _, l := range lines {
		if _, err := time.Parse("15:04:05.000", strings.Fields(l)[0]); err != nil {
			t.Errorf("line %q does not start with a time: %v", l, err)
		}
	}
}

func TestCtlEventsJSON(t *testing.T) {
	vm, sock := serveFake(t)
	out, done, _ := runCtlAsync(t, "--sock", sock, "events", "-o", "json")
	waitOutput(t, out, `"current state"`)
	vm.StopWith(0, "guest powered off")
	if s := waitExit(t, done); s != 0 {
		t.Fatalf("events exited %d", s)
	}
	var got []vmm.Event
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		got = append(got, jsonInto[vmm.Event](t, sc.Text()))
	}
	if len(got) != 2 || got[0].State != vmm.StateRunning || got[1].State != vmm.StateStopped ||
		got[1].Status == nil || *got[1].Status != 0 {
		t.Errorf("events -o json: %+v", got)
	}
}

func TestCtlEventsUntil(t *testing.T) {
	_, sock := serveFake(t)
	out, done, _ := runCtlAsync(t, "--sock", sock, "events", "--until", "paused")
	waitOutput(t, out, ": current state")
	ctl(t, sock, "pause")
	if s := waitExit(t, done); s != 0 {
		t.Fatalf("events --until paused exited %d", s)
	}
	if !strings.HasSuffix(out.String(), " state paused\n") {
		t.Errorf("output does not end with the paused event:\n%s", out.String())
	}
}

// TestCtlErrors: every failure is one "kvmm ctl: <error>" line on stderr
// and exit status 1, with nothing on stdout.
func TestCtlErrors(t *testing.T) {
	vm, sock := serveFake(t)
	vm.SetState(vmm.StatePaused)
	missing := filepath.Join(filepath.Dir(sock), "nobody.sock")
	for _, tc := range []struct {
		name string
		args []string
		want string // the whole stderr line after "kvmm ctl: "
	}{
		{"server error", []string{"--sock", sock, "pause"}, "VM is already paused"},
		{"conflict", []string{"--sock", sock, "power", "button"}, "power button: VM is paused, not running or suspended"},
		{"no socket flag", []string{"status"}, "--sock is required: the VM's API socket (kvmm run --api-sock)"},
		{"no server", []string{"--sock", missing, "status"}, "GET /vm on " + missing + ": dial unix " + missing + ": connect: no such file or directory"},
		{"bad power action", []string{"--sock", sock, "power", "jump"}, "power: want one of button, reset, shutdown"},
		{"power without action", []string{"--sock", sock, "power"}, "power: want one of button, reset, shutdown"},
		{"extra argument", []string{"--sock", sock, "status", "now"}, `status: unexpected argument "now"`},
		{"bad output", []string{"--sock", sock, "-o", "yaml", "status"}, `-o "yaml": want text or json`},
		{"negative top", []string{"--sock", sock, "metrics", "--top", "-1"}, "--top -1: want a count >= 0"},
		{"bad until", []string{"--sock", sock, "events", "--until", "asleep"}, `--until "asleep": want running, paused, suspended or stopped`},
		{"unknown subcommand", []string{"--sock", sock, "frobnicate"}, `unknown command "frobnicate" (see kvmm ctl --help)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, out, errOut := kvmm(t, append([]string{"ctl"}, tc.args...)...)
			if status != 1 {
				t.Errorf("exit status %d, want 1", status)
			}
			if want := "kvmm ctl: " + tc.want + "\n"; errOut != want {
				t.Errorf("stderr %q, want %q", errOut, want)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
		})
	}
	if s := vm.State(); s != vmm.StatePaused {
		t.Errorf("VM is %s after the failed commands", s)
	}
}

// TestRunRefusesLiveSocket: kvmm run --api-sock fails, before booting,
// when a live VM already answers on the socket.
func TestRunRefusesLiveSocket(t *testing.T) {
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		t.Skipf("no usable /dev/kvm: %v", err)
	} else {
		f.Close()
	}
	_, sock := serveFake(t)
	status, _, errOut := kvmm(t, "run", "--api-sock", sock)
	if status != 1 || !strings.Contains(errOut, "a running VM answers on it") {
		t.Errorf("status %d, stderr %q", status, errOut)
	}
}
