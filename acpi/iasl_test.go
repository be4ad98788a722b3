package acpi

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kvmm/kvmm/layout"
)

// iaslTimeout bounds one iasl run so a hang cannot stall the suite.
const iaslTimeout = 60 * time.Second

// iaslTables are disassembled with iasl -d. The RSDP is not among them:
// iasl (at least up to 20200925) refuses a binary RSDP file ("does not
// contain a valid ACPI table"), so TestIASLRSDP compiles one instead.
var iaslTables = []string{"XSDT", "FACP", "FACS", "DSDT", "APIC", "MCFG"}

func iaslPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("iasl not on PATH: install acpica-tools (apt-get install acpica-tools) to check the tables with the ACPICA disassembler; CI installs it")
	}
	return p
}

// zeroCounts are the summary counters iasl prints on success; they are not
// diagnostics.
var zeroCounts = regexp.MustCompile(`\b0 (Errors|Warnings)\b`)

// runIASL runs iasl in dir and fails the test on a non-zero exit, a
// timeout, or any error or warning in its output (iasl reports a bad
// checksum as "Firmware Warning ... Incorrect checksum" yet exits 0).
func runIASL(t *testing.T, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), iaslTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, iaslPath(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("iasl %s: timed out after %v\n%s", strings.Join(args, " "), iaslTimeout, out)
	}
	if err != nil {
		t.Fatalf("iasl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	checkNoDiagnostics(t, "iasl "+strings.Join(args, " "), string(out))
	return string(out)
}

func checkNoDiagnostics(t *testing.T, what, text string) {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		l := strings.ToLower(zeroCounts.ReplaceAllString(line, ""))
		if strings.Contains(l, "error") || strings.Contains(l, "warning") || strings.Contains(l, "incorrect") {
			t.Errorf("%s: %s", what, line)
		}
	}
}

func writeTables(t *testing.T, dir string, tb *Tables, sigs []string) []string {
	t.Helper()
	var files []string
	for _, sig := range sigs {
		b, ok := tb.Named[sig]
		if !ok {
			continue
		}
		name := strings.ToLower(sig) + ".dat"
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, name)
	}
	return files
}

func readDSL(t *testing.T, dir, dat string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, strings.TrimSuffix(dat, ".dat")+".dsl"))
	if err != nil {
		t.Fatalf("read disassembly: %v", err)
	}
	checkNoDiagnostics(t, dat+" disassembly", string(b))
	return string(b)
}

// TestIASLDisassemble disassembles every table alone, then all of them in
// one run, and checks the disassembly says what the tables should say.
func TestIASLDisassemble(t *testing.T) {
	iaslPath(t)
	for _, cfg := range []Config{{NumCPUs: 1}, {NumCPUs: 4, PCI: true, S3: true}, prtConfig()} {
		t.Run(fmt.Sprintf("cpus=%d,pci=%v,s3=%v,prt=%d", cfg.NumCPUs, cfg.PCI, cfg.S3, len(cfg.PRT)), func(t *testing.T) {
			tb := mustBuild(t, cfg)
			dir := t.TempDir()
			files := writeTables(t, dir, tb, iaslTables)
			for _, f := range files {
				runIASL(t, dir, "-d", f)
			}
			dsdt := readDSL(t, dir, "dsdt.dat")
			if !strings.Contains(dsdt, "_S5_") {
				t.Error("DSDT disassembly lacks _S5_")
			}
			if got := strings.Contains(dsdt, "_S3_"); got != cfg.S3 {
				t.Errorf("DSDT disassembly has _S3_ = %v, want %v", got, cfg.S3)
			}
			if got := strings.Contains(dsdt, "PNP0A08"); got != cfg.PCI {
				t.Errorf("DSDT disassembly has PNP0A08 = %v, want %v", got, cfg.PCI)
			}
			facp := readDSL(t, dir, "facp.dat")
			for _, want := range []string{
				fmt.Sprintf("PM1A Event Block Address : %08X", layout.PM1aEvtBlk),
				fmt.Sprintf("PM1A Control Block Address : %08X", layout.PM1aCntBlk),
				fmt.Sprintf("PM Timer Block Address : %08X", layout.PMTmrBlk),
				fmt.Sprintf("GPE0 Block Address : %08X", layout.GPE0Blk),
				fmt.Sprintf("SCI Interrupt : %04X", layout.SCIIRQ),
				"Hardware Reduced (V5) : 0",
				"Reset Register Supported (V2) : 1",
			} {
				if !strings.Contains(facp, want) {
					t.Errorf("FADT disassembly lacks %q", want)
				}
			}
			apic := readDSL(t, dir, "apic.dat")
			if got := strings.Count(apic, "[Processor Local APIC]"); got != cfg.NumCPUs {
				t.Errorf("MADT disassembly: %d local APICs, want %d", got, cfg.NumCPUs)
			}
			if len(cfg.PRT) > 0 {
				if got := strings.Count(dsdt, "0x001FFFFF"); got != 4 {
					t.Errorf("DSDT disassembly: %d _PRT entries for slot 31, want 4", got)
				}
				if !strings.Contains(dsdt, "_PRT") || !strings.Contains(dsdt, "QWordMemory") {
					t.Error("DSDT disassembly lacks _PRT or the 64-bit window")
				}
			}
			readDSL(t, dir, "xsdt.dat")
			readDSL(t, dir, "facs.dat")

			// The whole set in one run, as a table dump is disassembled.
			all := t.TempDir()
			files = writeTables(t, all, tb, iaslTables)
			runIASL(t, all, append([]string{"-d"}, files...)...)
		})
	}
}

// TestIASLRoundTripDSDT recompiles the DSDT's disassembly without name
// optimisation: iasl must accept it silently and produce our AML exactly.
func TestIASLRoundTripDSDT(t *testing.T) {
	iaslPath(t)
	for _, cfg := range []Config{{NumCPUs: 1}, {NumCPUs: 2, PCI: true, PCIBuses: 16, S3: true}, prtConfig()} {
		t.Run(fmt.Sprintf("cpus=%d,pci=%v,buses=%d,prt=%d", cfg.NumCPUs, cfg.PCI, cfg.PCIBuses, len(cfg.PRT)), func(t *testing.T) {
			tb := mustBuild(t, cfg)
			dir := t.TempDir()
			writeTables(t, dir, tb, []string{"DSDT"})
			runIASL(t, dir, "-d", "dsdt.dat")
			runIASL(t, dir, "-on", "-p", "again", "dsdt.dsl")
			again, err := os.ReadFile(filepath.Join(dir, "again.aml"))
			if err != nil {
				t.Fatal(err)
			}
			// Headers differ (iasl writes its own compiler id); the AML
			// must not.
			if ours := tb.Named["DSDT"][headerLen:]; !bytes.Equal(again[headerLen:], ours) {
				t.Errorf("iasl recompiles the DSDT to different AML:\n iasl % X\n ours % X", again[headerLen:], ours)
			}
		})
	}
}

// TestIASLRSDP compiles an RSDP with our fields through iasl's data-table
// compiler, which computes both checksums itself, and compares it with
// ours.
func TestIASLRSDP(t *testing.T) {
	iaslPath(t)
	tb := mustBuild(t, Config{NumCPUs: 1})
	rsdp := tb.Named["RSDP"]
	src := fmt.Sprintf(`[0008]                          Signature : "RSD PTR "
[0001]                           Checksum : 00
[0006]                             Oem ID : "KVMM  "
[0001]                           Revision : 02
[0004]                       RSDT Address : 00000000
[0004]                             Length : 00000024
[0008]                       XSDT Address : %016X
[0001]                  Extended Checksum : 00
[0003]                           Reserved : 000000
`, lendian.Uint64(rsdp[24:]))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rsdp.asl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	runIASL(t, dir, "rsdp.asl")
	got, err := os.ReadFile(filepath.Join(dir, "rsdp.aml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, rsdp) {
		t.Errorf("RSDP differs from iasl's:\n iasl % X\n ours % X", got, rsdp)
	}
}

// prtConfig is a PCI config with the INTx routing and 64-bit window the VMM
// passes: 32 slots x 4 pins, GSI 16 + (slot + pin) % 8.
func prtConfig() Config {
	cfg := Config{NumCPUs: 2, PCI: true, S3: true, PCIMMIO64: &Window{Start: 64 << 30, End: 128<<30 - 1}}
	for slot := uint8(0); slot < 32; slot++ {
		for pin := uint8(0); pin < 4; pin++ {
			cfg.PRT = append(cfg.PRT, PRTRoute{Slot: slot, Pin: pin, GSI: 16 + uint32(slot+pin)%8})
		}
	}
	return cfg
}
