package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvmm/kvmm/internal/guesttest"
)

func virtioImage(t *testing.T, dir, name string) string {
	t.Helper()
	img := make([]byte, 2048*512)
	for s := range 2048 {
		for i := range 512 {
			img[s*512+i] = byte(i*7 + s*13)
		}
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVirtioFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	img := virtioImage(t, dir, "a.img")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--disk", img + ",cache=none"}, `unknown option "cache=none"`},
		{[]string{"run", "--disk", ",readonly"}, "--disk"},
		{[]string{"run", "--disk", filepath.Join(dir, "none.img")}, "no such file"},
		{[]string{"run", "--disk", img + ",bus=1"}, "needs 1 PCI-to-PCI bridges (--pci-bridges 1)"},
		{[]string{"run", "--disk", img, "--disk", img}, "the same image as disk 0"},
		{[]string{"run", "--disk", img + ",serial=" + strings.Repeat("x", 21)}, "longer than 20 bytes"},
		{[]string{"run", "--rng", "--pci-bus", "2", "--pci-bridges", "1"}, "PCI bus 2 needs 2"},
		{[]string{"run", "--console", "tty"}, `console "tty"`},
	} {
		status, _, stderr := kvmm(t, tc.args...)
		if status == 0 {
			t.Errorf("%v: exit 0", tc.args)
		}
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: stderr %q does not mention %q", tc.args, stderr, tc.want)
		}
		if lines := strings.Count(strings.TrimSpace(stderr), "\n") + 1; lines != 1 {
			t.Errorf("%v: %d lines of error output, want one:\n%s", tc.args, lines, stderr)
		}
	}
}

// TestVirtioBlkGuestCLI is the command line: two disks, one of
// them read-only behind a bridge, the rng and the virtio console, with the
// virtioblk guest reporting on COM1 (whose output still reaches the
// terminal with --console virtio).
func TestVirtioBlkGuestCLI(t *testing.T) {
	haveKVM(t)
	elf := guesttest.BuildT(t, "virtioblk")
	dir := t.TempDir()
	a, b := virtioImage(t, dir, "a.img"), virtioImage(t, dir, "b.img")
	status, stdout, stderr := kvmm(t, "run", "--kernel", elf, "--mem", "128M", "--cmdline", "virtioblk.strict",
		"--on-reboot", "exit", "--pci-bridges", "1",
		"--disk", a+",serial=kvmm-disk0", "--disk", b+",readonly,serial=kvmm-disk1-ro,bus=1",
		"--rng", "--console", "virtio")
	if status != guesttest.PassStatus || !strings.Contains(stdout, "virtioblk: 2 disks passed") {
		t.Fatalf("status %d\nstdout:\n%s\nstderr:\n%s", status, stdout, stderr)
	}
	for _, want := range []string{"virtio-blk 00:02.0 (MSI-X)", "virtio-blk 01:00.0 (INTx)", "write to the read-only disk: IOERR"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	img, _ := os.ReadFile(a)
	want := make([]byte, 512)
	for i := range want {
		want[i] = byte(i*3 + 0x5A)
	}
	if !bytes.Equal(img[1024:1536], want) {
		t.Error("the host file lacks the written sector")
	}
}

// TestVirtioConfigFile: disks from a JSON config, and --disk replacing
// them.
func TestVirtioConfigFile(t *testing.T) {
	dir := t.TempDir()
	a, b := virtioImage(t, dir, "a.img"), virtioImage(t, dir, "b.img")
	cfgPath := filepath.Join(dir, "vm.json")
	js := `{"memory":"128M","cpus":1,"pci":{"bridges":1},"disks":[{"path":"` + a + `","serial":"s0"},{"path":"` + b +
		`","readonly":true,"bus":1}],"rng":true,"console":"virtio","pci_bus":1}`
	if err := os.WriteFile(cfgPath, []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	status, _, stderr := kvmm(t, "run", "--config", cfgPath, "--kvm-device", filepath.Join(dir, "nokvm"))
	if status == 0 || !strings.Contains(stderr, "open KVM device") {
		t.Fatalf("a valid virtio config must get as far as opening KVM: status %d, %q", status, stderr)
	}
	status, _, stderr = kvmm(t, "run", "--config", cfgPath, "--disk", a+",bus=2", "--kvm-device", filepath.Join(dir, "nokvm"))
	if status == 0 || !strings.Contains(stderr, "PCI bus 2 needs 2") {
		t.Fatalf("--disk must replace the file's disks: status %d, %q", status, stderr)
	}
}
