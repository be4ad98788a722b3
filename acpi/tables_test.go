package acpi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/kvmm/kvmm/layout"
)

var lendian = binary.LittleEndian // read-only alias for brevity

// testConfigs cover the corners of Config: smallest, typical, largest.
var testConfigs = []Config{
	{NumCPUs: 1},
	{NumCPUs: 1, S3: true},
	{NumCPUs: 4, PCI: true, S3: true},
	{NumCPUs: 2, PCI: true, PCIBuses: 1},
	{NumCPUs: 255, PCI: true, PCIBuses: 256, S3: true},
}

func mustBuild(t *testing.T, cfg Config) *Tables {
	t.Helper()
	tb, err := Build(cfg)
	if err != nil {
		t.Fatalf("Build(%+v): %v", cfg, err)
	}
	return tb
}

func TestBuildRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{NumCPUs: 0},
		{NumCPUs: -1},
		{NumCPUs: 256},
		{NumCPUs: 1, PCI: true, PCIBuses: -1},
		{NumCPUs: 1, PCI: true, PCIBuses: 257},
	} {
		if _, err := Build(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Build(%+v) error = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}

// table returns the table at guest-physical addr inside the image, checking
// it lies inside and that its header is sane.
func table(t *testing.T, tb *Tables, addr uint64, sig string) []byte {
	t.Helper()
	if addr < tb.Base || addr+headerLen > tb.Base+uint64(len(tb.Image)) {
		t.Fatalf("%s at %#x: outside the image [%#x, +%#x)", sig, addr, tb.Base, len(tb.Image))
	}
	off := addr - tb.Base
	n := uint64(lendian.Uint32(tb.Image[off+4:]))
	if off+n > uint64(len(tb.Image)) {
		t.Fatalf("%s at %#x: length %d runs past the image", sig, addr, n)
	}
	b := tb.Image[off : off+n]
	checkHeader(t, b, sig)
	if addr%tableAlign != 0 {
		t.Errorf("%s at %#x: not %d-byte aligned", sig, addr, tableAlign)
	}
	if named := tb.Named[sig]; !bytes.Equal(named, b) {
		t.Errorf("Named[%q] differs from the image's table", sig)
	}
	return b
}

func checkHeader(t *testing.T, b []byte, sig string) {
	t.Helper()
	if got := string(b[0:4]); got != sig {
		t.Errorf("signature %q, want %q", got, sig)
	}
	if got := lendian.Uint32(b[4:]); int(got) != len(b) {
		t.Errorf("%s: length field %d, table is %d bytes", sig, got, len(b))
	}
	if s := sum8(b); s != 0 {
		t.Errorf("%s: bytes sum to %#x, want 0", sig, s)
	}
	if got := string(b[10:16]); got != "KVMM  " {
		t.Errorf("%s: OEM ID %q", sig, got)
	}
	if got := string(b[16:24]); got != "KVMMTBL " {
		t.Errorf("%s: OEM table ID %q", sig, got)
	}
	if got := string(b[28:32]); got != "KVMM" {
		t.Errorf("%s: creator ID %q", sig, got)
	}
}

// TestTablesWalk follows the pointers as an OS does, from the RSDP, and
// checks every table it reaches.
func TestTablesWalk(t *testing.T) {
	for _, cfg := range testConfigs {
		t.Run(fmt.Sprintf("%+v", cfg), func(t *testing.T) {
			tb := mustBuild(t, cfg)
			if tb.Base != layout.ACPIStart || tb.RSDPAddr != layout.ACPIStart {
				t.Errorf("Base %#x RSDPAddr %#x, want both %#x", tb.Base, tb.RSDPAddr, layout.ACPIStart)
			}
			if end := tb.Base + uint64(len(tb.Image)); end > layout.ACPIEnd {
				t.Errorf("image ends at %#x, past %#x", end, layout.ACPIEnd)
			}

			rsdp := tb.Image[tb.RSDPAddr-tb.Base:][:rsdpLen]
			checkRSDP(t, rsdp)
			if !bytes.Equal(tb.Named["RSDP"], rsdp) {
				t.Error(`Named["RSDP"] differs from the image`)
			}

			xsdt := table(t, tb, lendian.Uint64(rsdp[24:]), "XSDT")
			sigs := map[string]uint64{}
			for off := headerLen; off < len(xsdt); off += 8 {
				addr := lendian.Uint64(xsdt[off:])
				sig := string(tb.Image[addr-tb.Base:][:4])
				if _, dup := sigs[sig]; dup {
					t.Errorf("XSDT lists %s twice", sig)
				}
				sigs[sig] = addr
				table(t, tb, addr, sig)
			}
			want := []string{"FACP", "APIC"}
			if cfg.PCI {
				want = append(want, "MCFG")
			}
			if len(sigs) != len(want) {
				t.Errorf("XSDT lists %v, want %v", sigs, want)
			}
			for _, s := range want {
				if _, ok := sigs[s]; !ok {
					t.Errorf("XSDT does not list %s", s)
				}
			}
			if _, ok := tb.Named["MCFG"]; ok != cfg.PCI {
				t.Errorf(`Named["MCFG"] present = %v, want %v`, ok, cfg.PCI)
			}

			fadt := table(t, tb, sigs["FACP"], "FACP")
			checkFADT(t, tb, fadt)
			dsdt := table(t, tb, uint64(lendian.Uint32(fadt[fadtDSDT:])), "DSDT")
			checkDSDT(t, dsdt, cfg)
			checkMADT(t, table(t, tb, sigs["APIC"], "APIC"), cfg.NumCPUs)
			if cfg.PCI {
				checkMCFG(t, table(t, tb, sigs["MCFG"], "MCFG"), cfg)
			}
		})
	}
}

func checkRSDP(t *testing.T, r []byte) {
	t.Helper()
	if string(r[0:8]) != "RSD PTR " {
		t.Errorf("RSDP signature %q", r[0:8])
	}
	if s := sum8(r[:rsdpV1Len]); s != 0 {
		t.Errorf("RSDP: first 20 bytes sum to %#x", s)
	}
	if s := sum8(r); s != 0 {
		t.Errorf("RSDP: 36 bytes sum to %#x", s)
	}
	if r[15] != 2 || lendian.Uint32(r[20:]) != rsdpLen {
		t.Errorf("RSDP revision %d length %d, want 2 and 36", r[15], lendian.Uint32(r[20:]))
	}
	if string(r[9:15]) != "KVMM  " {
		t.Errorf("RSDP OEM ID %q", r[9:15])
	}
}

func checkFADT(t *testing.T, tb *Tables, f []byte) {
	t.Helper()
	if len(f) != fadtLen || f[8] != 6 || f[fadtMinorVersion] != 5 {
		t.Errorf("FADT length %d revision %d.%d, want 276 and 6.5", len(f), f[8], f[fadtMinorVersion])
	}
	facs := uint64(lendian.Uint32(f[36:]))
	if facs != tb.FACSAddr || lendian.Uint64(f[132:]) != facs {
		t.Errorf("FACS pointers %#x / X %#x, want %#x", facs, lendian.Uint64(f[132:]), tb.FACSAddr)
	}
	if lendian.Uint64(f[140:]) != uint64(lendian.Uint32(f[40:])) {
		t.Errorf("DSDT %#x and X_DSDT %#x differ", lendian.Uint32(f[40:]), lendian.Uint64(f[140:]))
	}
	checkFACS(t, tb, facs)

	u16 := func(off int) uint64 { return uint64(lendian.Uint16(f[off:])) }
	u32 := func(off int) uint64 { return uint64(lendian.Uint32(f[off:])) }
	u8 := func(off int) uint64 { return uint64(f[off]) }
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"SCI_INT@46", u16(46), layout.SCIIRQ},
		{"SMI_CMD@48", u32(48), 0},
		{"PM1a_EVT_BLK@56", u32(56), layout.PM1aEvtBlk},
		{"PM1a_CNT_BLK@64", u32(64), layout.PM1aCntBlk},
		{"PM_TMR_BLK@76", u32(76), layout.PMTmrBlk},
		{"GPE0_BLK@80", u32(80), layout.GPE0Blk},
		{"PM1_EVT_LEN@88", u8(88), 4},
		{"PM1_CNT_LEN@89", u8(89), 2},
		{"PM_TMR_LEN@91", u8(91), 4},
		{"GPE0_BLK_LEN@92", u8(92), layout.GPE0BlkLen},
		{"IAPC_BOOT_ARCH@109", u16(109), 0x7},
		{"RESET_VALUE@128", u8(128), layout.ResetValue},
	} {
		if c.got != c.want {
			t.Errorf("FADT %s = %#x, want %#x", c.name, c.got, c.want)
		}
	}

	flags := lendian.Uint32(f[112:])
	for _, c := range []struct {
		name string
		bit  uint32
		set  bool
	}{
		{"WBINVD", fadtFlagWBINVD, true},
		{"PWR_BUTTON", fadtFlagPwrButton, false},
		{"SLP_BUTTON", fadtFlagSlpButton, true},
		{"TMR_VAL_EXT", fadtFlagTmrValExt, true},
		{"RESET_REG_SUP", fadtFlagResetRegSup, true},
		{"HW_REDUCED_ACPI", fadtFlagHWReduced, false},
		{"LOW_POWER_S0_IDLE", fadtFlagLowPowerS0, false},
	} {
		if (flags&c.bit != 0) != c.set {
			t.Errorf("FADT flag %s = %v, want %v (flags %#x)", c.name, !c.set, c.set, flags)
		}
	}

	for _, g := range []struct {
		name   string
		off    int
		want   gas
		legacy int // offset of the 32-bit counterpart, or -1
	}{
		{"RESET_REG@116", 116, gas{1, 8, 0, 1, layout.ResetReg}, -1},
		{"X_PM1a_EVT_BLK@148", 148, gas{1, 32, 0, 2, layout.PM1aEvtBlk}, 56},
		{"X_PM1a_CNT_BLK@172", 172, gas{1, 16, 0, 2, layout.PM1aCntBlk}, 64},
		{"X_PM_TMR_BLK@208", 208, gas{1, 32, 0, 3, layout.PMTmrBlk}, 76},
		{"X_GPE0_BLK@220", 220, gas{1, 32, 0, 1, layout.GPE0Blk}, 80},
	} {
		b := f[g.off:]
		got := gas{b[0], b[1], b[2], b[3], lendian.Uint64(b[4:])}
		if got != g.want {
			t.Errorf("FADT %s = %+v, want %+v", g.name, got, g.want)
		}
		if g.legacy >= 0 && u32(g.legacy) != got.addr {
			t.Errorf("FADT %s address %#x differs from its 32-bit field %#x", g.name, got.addr, u32(g.legacy))
		}
	}
	// Unused blocks stay zero: PM1b, PM2, GPE1, sleep registers.
	for _, off := range []int{60, 68, 72, 84, 160, 184, 196, 232, 244, 256} {
		if !bytes.Equal(f[off:off+4], make([]byte, 4)) {
			t.Errorf("FADT field at %d is not zero", off)
		}
	}
}

func checkFACS(t *testing.T, tb *Tables, addr uint64) {
	t.Helper()
	if addr%facsAlign != 0 {
		t.Errorf("FACS at %#x: not 64-byte aligned", addr)
	}
	f := tb.Image[addr-tb.Base:][:facsLen]
	if string(f[0:4]) != "FACS" || lendian.Uint32(f[4:]) != facsLen || f[32] != 2 {
		t.Errorf("FACS header: sig %q length %d version %d", f[0:4], lendian.Uint32(f[4:]), f[32])
	}
	if !bytes.Equal(f[8:32], make([]byte, 24)) {
		t.Errorf("FACS vectors, lock and flags not zero: % X", f[8:32])
	}
	if !bytes.Equal(tb.Named["FACS"], f) {
		t.Error(`Named["FACS"] differs from the image`)
	}
}

func checkDSDT(t *testing.T, d []byte, cfg Config) {
	t.Helper()
	if d[8] != 2 {
		t.Errorf("DSDT revision %d, want 2 (64-bit integers)", d[8])
	}
	aml := d[headerLen:]
	s5 := []byte{0x08, 0x5C, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00}
	s3 := []byte{0x08, 0x5C, 0x5F, 0x53, 0x33, 0x5F, 0x12, 0x06, 0x04, 0x01, 0x01, 0x00, 0x00}
	pnp0a08 := []byte{0x0C, 0x41, 0xD0, 0x0A, 0x08}
	if !bytes.Contains(aml, s5) {
		t.Error(`DSDT lacks \_S5_`)
	}
	if got := bytes.Contains(aml, s3); got != cfg.S3 {
		t.Errorf(`DSDT has \_S3_ = %v, want %v`, got, cfg.S3)
	}
	if got := bytes.Contains(aml, pnp0a08); got != cfg.PCI {
		t.Errorf("DSDT has PNP0A08 = %v, want %v", got, cfg.PCI)
	}
	if cfg.PCI {
		buses := cfg.PCIBuses
		if buses == 0 {
			buses = 256
		}
		want := mustBytesR(t, WordBusNumber(0, uint16(buses-1)))
		if !bytes.Contains(aml, want) {
			t.Errorf("DSDT lacks the bus range 0..%d", buses-1)
		}
	}
}

func mustBytesR(t *testing.T, r Resource) []byte {
	t.Helper()
	b, err := r.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkMADT(t *testing.T, m []byte, n int) {
	t.Helper()
	if got := lendian.Uint32(m[madtLAPICAddr:]); got != layout.LAPICAddr {
		t.Errorf("MADT LAPIC address %#x", got)
	}
	if got := lendian.Uint32(m[madtFlags:]); got != madtPCATCompat {
		t.Errorf("MADT flags %#x, want PCAT_COMPAT", got)
	}
	lapicIDs := map[byte]bool{}
	var ioapicID byte
	var entries, ioapics, nmis int
	isos := map[byte][2]uint32{}
	for off := madtEntries; off < len(m); {
		typ, l := m[off], int(m[off+1])
		if l < 2 || off+l > len(m) {
			t.Fatalf("MADT entry at %d: bad length %d", off, l)
		}
		e := m[off : off+l]
		entries++
		switch typ {
		case madtTypeLAPIC:
			if e[2] != e[3] || lendian.Uint32(e[4:]) != lapicEnabled {
				t.Errorf("LAPIC entry % X: want uid = id, enabled", e)
			}
			if lapicIDs[e[3]] {
				t.Errorf("LAPIC id %d twice", e[3])
			}
			lapicIDs[e[3]] = true
		case madtTypeIOAPIC:
			ioapics++
			ioapicID = e[2]
			if lendian.Uint32(e[4:]) != layout.IOAPICAddr || lendian.Uint32(e[8:]) != 0 {
				t.Errorf("IOAPIC entry % X", e)
			}
		case madtTypeISO:
			if e[2] != 0 {
				t.Errorf("ISO entry % X: bus %d, want ISA", e, e[2])
			}
			isos[e[3]] = [2]uint32{lendian.Uint32(e[4:]), uint32(lendian.Uint16(e[8:]))}
		case madtTypeLAPICNMI:
			nmis++
			if e[2] != 0xFF || e[5] != 1 {
				t.Errorf("LAPIC NMI entry % X: want all processors, LINT1", e)
			}
		default:
			t.Errorf("unexpected MADT entry type %d", typ)
		}
		off += l
	}
	if entries != n+4 || len(lapicIDs) != n || ioapics != 1 || nmis != 1 || len(isos) != 2 {
		t.Errorf("MADT: %d entries (%d LAPIC, %d IOAPIC, %d ISO, %d NMI), want %d", entries, len(lapicIDs), ioapics, len(isos), nmis, n+4)
	}
	for i := 0; i < n; i++ {
		if !lapicIDs[byte(i)] {
			t.Errorf("no LAPIC with id %d", i)
		}
	}
	if lapicIDs[ioapicID] {
		t.Errorf("IOAPIC id %d clashes with a LAPIC id", ioapicID)
	}
	if got := isos[0]; got != [2]uint32{2, 0} {
		t.Errorf("IRQ0 override (GSI, flags) = %v, want GSI 2 conforming", got)
	}
	if got := isos[layout.SCIIRQ]; got != [2]uint32{layout.SCIIRQ, 0x0D} {
		t.Errorf("SCI override (GSI, flags) = %v, want GSI 9 level active-high (0x0D)", got)
	}
}

func checkMCFG(t *testing.T, m []byte, cfg Config) {
	t.Helper()
	buses := cfg.PCIBuses
	if buses == 0 {
		buses = 256
	}
	if len(m) != headerLen+8+16 {
		t.Fatalf("MCFG length %d, want one allocation (60)", len(m))
	}
	a := m[headerLen+8:]
	if lendian.Uint64(a) != layout.ECAMStart || lendian.Uint16(a[8:]) != 0 || a[10] != 0 || int(a[11]) != buses-1 {
		t.Errorf("MCFG allocation % X: want base %#x, segment 0, buses 0..%d", a, layout.ECAMStart, buses-1)
	}
}

func TestNamedIsACopy(t *testing.T) {
	tb := mustBuild(t, Config{NumCPUs: 1})
	before := bytes.Clone(tb.Image)
	for _, b := range tb.Named {
		for i := range b {
			b[i] ^= 0xFF
		}
	}
	if !bytes.Equal(before, tb.Image) {
		t.Error("editing Named changed Image")
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	cfg := Config{NumCPUs: 8, PCI: true, S3: true}
	a, b := mustBuild(t, cfg), mustBuild(t, cfg)
	if !bytes.Equal(a.Image, b.Image) {
		t.Error("two builds of one Config differ")
	}
}
