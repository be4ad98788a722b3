package pci

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func dumpTopology(t *testing.T, extended bool) (string, *rig) {
	t.Helper()
	r := newRig(t)
	buildTopology(t, r)
	if err := r.root.Enumerate(); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := r.root.Dump(&b, extended); err != nil {
		t.Fatal(err)
	}
	return b.String(), r
}

func TestDumpFormat(t *testing.T) {
	out, r := dumpTopology(t, false)
	blocks := strings.Split(strings.TrimSuffix(out, "\n\n"), "\n\n")
	if len(blocks) != 6 {
		t.Fatalf("%d functions dumped, want 6:\n%s", len(blocks), out)
	}
	wantSlots := []string{"00:00.0", "00:01.0", "00:02.0", "01:00.0", "01:01.0", "02:03.0"}
	for i, blk := range blocks {
		lines := strings.Split(blk, "\n")
		if !strings.HasPrefix(lines[0], wantSlots[i]+" ") {
			t.Errorf("block %d starts %q, want %s", i, lines[0], wantSlots[i])
		}
		if len(lines) != 1+16 {
			t.Errorf("%s: %d rows, want 16", wantSlots[i], len(lines)-1)
		}
		for j, l := range lines[1:] {
			if !strings.HasPrefix(l, fmt.Sprintf("%02x: ", j*16)) || len(l) != 4+16*3-1 {
				t.Errorf("%s row %d: %q", wantSlots[i], j, l)
			}
		}
	}
	if !strings.HasPrefix(out, "00:00.0 Host bridge: Intel Corporation 82G33/G31/P35/P31 Express DRAM Controller\n00: 86 80 c0 29 00 00 00 00 00 00 00 06 00 00 00 00\n") {
		t.Errorf("host bridge block:\n%s", out[:200])
	}
	// The rows are what the configuration mechanism returns.
	if !strings.Contains(out, fmt.Sprintf("\n00: f4 1a 7f 10 %02x", r.cfRead(2, 3, 0, RegCommand, 1))) {
		t.Errorf("02:03.0 first row does not match a config read:\n%s", out)
	}
	ext, _ := dumpTopology(t, true)
	if !strings.Contains(ext, "\nff0: 00") || strings.Count(ext, "\n100: ") != 6 {
		t.Errorf("extended dump lacks rows 100-ff0")
	}
}

// TestDumpUnreachableSkipped: functions behind a bridge whose bus numbers
// are not programmed cannot be scanned, so lspci would not list them.
func TestDumpUnreachableSkipped(t *testing.T) {
	r := newRig(t)
	buildTopology(t, r)
	var b bytes.Buffer
	if err := r.root.Dump(&b, false); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), "\n\n"); n != 3 {
		t.Errorf("%d functions dumped before bus numbering, want 3 (bus 0):\n%s", n, b.String())
	}
}

// runLspci decodes a dump with the host's lspci (pciutils); the test skips
// where it is not installed.
func runLspci(t *testing.T, dump string, args ...string) string {
	t.Helper()
	lspci, err := exec.LookPath("lspci")
	if err != nil {
		t.Skipf("lspci not installed (Debian package pciutils): %v", err)
	}
	path := filepath.Join(t.TempDir(), "dump.txt")
	if err := os.WriteFile(path, []byte(dump), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(lspci, append([]string{"-F", path}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("lspci %v: %v\n%s", args, err, stderr.String())
	}
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		// -vvv looks up kernel modules, which a dump has nothing to do with.
		if l != "" && !strings.Contains(l, "libkmod") {
			t.Errorf("lspci complained: %s", l)
		}
	}
	return stdout.String()
}

// checkLspci checks lspci -vvv output of a dump: every capability of
// every function decoded, nothing unknown or broken. caps lists, per slot,
// the capability names in list order. (From a dump, lspci 3.9 lists the
// upper half of a 64-bit BAR above 4 GiB as its own "Region n+1: Memory
// at <unassigned> (32-bit...)": without sysfs resource flags it reads that
// DWORD as a BAR. That line is lspci's, not a decoding error.)
func checkLspci(t *testing.T, decoded string, caps map[string][]string) {
	t.Helper()
	for _, bad := range []string{"<?>", "nknown", "<broken", "chain broken", "<unreadable>", "<ignored>", "rror"} {
		if strings.Contains(decoded, bad) {
			t.Errorf("lspci output contains %q:\n%s", bad, decoded)
		}
	}
	for slot, want := range caps {
		i := strings.Index(decoded, "\n"+slot+" ")
		if !strings.HasPrefix(decoded, slot+" ") && i < 0 {
			t.Errorf("lspci did not list %s", slot)
			continue
		}
		blk := decoded[i+1:]
		if j := strings.Index(blk, "\n\n"); j >= 0 {
			blk = blk[:j]
		}
		got := regexp.MustCompile(`Capabilities: \[[0-9a-f]+\] ([^:\n]+)`).FindAllStringSubmatch(blk, -1)
		var names []string
		for _, g := range got {
			names = append(names, g[1])
		}
		if strings.Join(names, ",") != strings.Join(want, ",") {
			t.Errorf("%s capabilities %q, want %q", slot, names, want)
		}
	}
}

func TestLspciDecodesDump(t *testing.T) {
	dump, _ := dumpTopology(t, false)
	decoded := runLspci(t, dump, "-vvv")
	checkLspci(t, decoded, map[string][]string{
		"00:00.0": nil,
		"00:01.0": {"MSI-X", "Vendor Specific Information"},
		"00:02.0": {"Subsystem"},
		"01:00.0": {"MSI-X", "Vendor Specific Information"},
		"01:01.0": {"Subsystem"},
		"02:03.0": {"Vendor Specific Information"},
	})
	for _, want := range []string{
		"00:00.0 Host bridge: Intel Corporation 82G33/G31/P35/P31 Express DRAM Controller",
		"00:02.0 PCI bridge: Red Hat, Inc. QEMU PCI-PCI bridge (prog-if 00 [Normal decode])",
		"Bus: primary=00, secondary=01, subordinate=02, sec-latency=0",
		"Bus: primary=01, secondary=02, subordinate=02, sec-latency=0",
		"MSI-X: Enable- Count=4 Masked-",
		"Vector table: BAR=1 offset=00000000",
		"PBA: BAR=1 offset=00000800",
		"VirtIO: CommonCfg",
		"Interrupt: pin A routed to IRQ 18",
		"Region 2: Memory at 1000000000 (64-bit, prefetchable)",
		"Region 4: I/O ports at c000",
	} {
		if !strings.Contains(decoded, want) {
			t.Errorf("lspci output lacks %q", want)
		}
	}
	// lspci -F -x reproduces our rows byte for byte (256 and 4096 bytes).
	for _, tc := range []struct {
		extended bool
		flag     string
	}{{false, "-xxx"}, {true, "-xxxx"}} {
		dump, _ := dumpTopology(t, tc.extended)
		again := runLspci(t, dump, tc.flag)
		if rows(again) != rows(dump) {
			t.Errorf("lspci %s does not reproduce the dump's rows", tc.flag)
		}
	}
}

// rows keeps the hex rows of a dump, dropping the description lines
// (lspci words them from its ID database).
func rows(dump string) string {
	var b strings.Builder
	for _, l := range strings.Split(dump, "\n") {
		if regexp.MustCompile(`^[0-9a-f]{2,3}: `).MatchString(l) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
