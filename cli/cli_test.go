package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func haveKVM(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no usable /dev/kvm: %v", err)
	}
	f.Close()
}

func TestBadInputIsRefusedWithOneLine(t *testing.T) {
	dir := t.TempDir()
	badJSON := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(badJSON, []byte(`{"memory":"1G","colour":"blue"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("x"), 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--mem", "lots"}, "--mem"},
		{[]string{"run", "--mem", "1M"}, "memory"},
		{[]string{"run", "--cpus", "0"}, "cpus"},
		{[]string{"run", "--cpus", "two"}, "invalid argument"},
		{[]string{"run", "--cpu", "486"}, "cpu model"},
		{[]string{"run", "--on-reboot", "maybe"}, "on-reboot"},
		{[]string{"run", "--config", badJSON}, "unknown field"},
		{[]string{"run", "--config", filepath.Join(dir, "none.json")}, "no such file"},
		{[]string{"run", "--kernel", filepath.Join(dir, "none")}, "no such file"},
		{[]string{"run", "--no-such-flag"}, "unknown flag"},
		{[]string{"run", "--kvm-device", filepath.Join(dir, "kvm")}, "open KVM device"},
		{[]string{"run", "--wake-after", "-1s"}, "wake-after"},
		{[]string{"frobnicate"}, "unknown command"},
	} {
		status, _, stderr := kvmm(t, tc.args...)
		if status == 0 {
			t.Errorf("%v: exit 0", tc.args)
		}
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: stderr %q does not mention %q", tc.args, stderr, tc.want)
		}
		if lines := strings.Count(strings.TrimSpace(stderr), "\n") + 1; lines != 1 && !strings.Contains(stderr, "\n\t") {
			t.Errorf("%v: %d lines of error output, want one:\n%s", tc.args, lines, stderr)
		}
	}
	// A file that is neither a bzImage nor an ELF is refused before a VM runs.
	haveKVM(t)
	status, _, stderr := kvmm(t, "run", "--kernel", garbage)
	if status == 0 || !strings.Contains(stderr, "not a bzImage") {
		t.Errorf("garbage kernel: status %d, stderr %q", status, stderr)
	}
}

func TestNoArgumentsBootsTheBuiltinGuest(t *testing.T) {
	haveKVM(t)
	start := time.Now()
	status, stdout, stderr := kvmm(t)
	if status != 0 {
		t.Fatalf("kvmm: status %d\nstdout:\n%s\nstderr:\n%s", status, stdout, stderr)
	}
	if !strings.Contains(stdout, "PASS selftest") {
		t.Errorf("no self-test verdict in:\n%s", stdout)
	}
	t.Logf("kvmm with no arguments: %v in-process", time.Since(start))
}

func TestConfigFileAndFlagOverride(t *testing.T) {
	haveKVM(t)
	cfg := filepath.Join(t.TempDir(), "vm.json")
	if err := os.WriteFile(cfg, []byte(`{"memory":"64M","cpus":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	status, stdout, stderr := kvmm(t, "run", "--config", cfg, "--cpus", "2")
	if status != 0 {
		t.Fatalf("status %d: %s", status, stderr)
	}
	if !strings.Contains(stdout, "cpus=2 started=1") || !strings.Contains(stdout, "RAM total 63 MiB") {
		t.Errorf("config file plus --cpus override not applied:\n%s", stdout)
	}
}

func TestTestCommand(t *testing.T) {
	haveKVM(t)
	status, _, stderr := kvmm(t, "test", "-q", "--cpus", "2", "--expect", `cpus=2 started=1`, "--expect", "PASS selftest", "--reject", "FAIL")
	if status != 0 || !strings.Contains(stderr, "kvmm test: PASS") {
		t.Errorf("status %d, stderr %q", status, stderr)
	}
	status, _, stderr = kvmm(t, "test", "-q", "--expect-status", "3")
	if status != 1 || !strings.Contains(stderr, "exit status 0") {
		t.Errorf("wrong status not reported: status %d, stderr %q", status, stderr)
	}
	status, _, stderr = kvmm(t, "test", "-q", "--expect", "no such line")
	if status != 1 || !strings.Contains(stderr, "output lacks") {
		t.Errorf("missing output not reported: status %d, stderr %q", status, stderr)
	}
	status, _, stderr = kvmm(t, "test", "-q", "--expect", "(")
	if status == 0 || !strings.Contains(stderr, "pattern") {
		t.Errorf("bad pattern accepted: status %d, stderr %q", status, stderr)
	}
}
