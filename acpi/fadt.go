package acpi

import (
	"encoding/binary"

	"github.com/kvmm/kvmm/layout"
)

// FADT revision 6 (ACPI 6.5: major 6, minor 5), 276 bytes.
const (
	fadtRevision      = 6
	fadtMinorRevision = 5
	fadtLen           = 276
)

// FADT field offsets (ACPI 6.5 Table 5.9) that kvmm fills in.
const (
	fadtFirmwareCtrl  = 36
	fadtDSDT          = 40
	fadtSCIInt        = 46
	fadtSMICmd        = 48
	fadtPM1aEvtBlk    = 56
	fadtPM1aCntBlk    = 64
	fadtPMTmrBlk      = 76
	fadtGPE0Blk       = 80
	fadtPM1EvtLen     = 88
	fadtPM1CntLen     = 89
	fadtPMTmrLen      = 91
	fadtGPE0BlkLen    = 92
	fadtPLvl2Lat      = 96
	fadtPLvl3Lat      = 98
	fadtIAPCBootArch  = 109
	fadtFlags         = 112
	fadtResetReg      = 116
	fadtResetValue    = 128
	fadtMinorVersion  = 131
	fadtXFirmwareCtrl = 132
	fadtXDSDT         = 140
	fadtXPM1aEvtBlk   = 148
	fadtXPM1aCntBlk   = 172
	fadtXPMTmrBlk     = 208
	fadtXGPE0Blk      = 220
)

// FADT Flags bits (ACPI 6.5 Table 5.10).
const (
	fadtFlagWBINVD      = 1 << 0
	fadtFlagProcC1      = 1 << 2
	fadtFlagPwrButton   = 1 << 4 // set = NO fixed power button
	fadtFlagSlpButton   = 1 << 5 // set = NO fixed sleep button
	fadtFlagTmrValExt   = 1 << 8
	fadtFlagResetRegSup = 1 << 10
	fadtFlagHWReduced   = 1 << 20
	fadtFlagLowPowerS0  = 1 << 21
)

// IAPC_BOOT_ARCH bits (ACPI 6.5 Table 5.11).
const (
	bootArchLegacyDevices = 1 << 0
	bootArch8042          = 1 << 1
	bootArchVGANotPresent = 1 << 2
)

// Register lengths in bytes as the FADT states them.
const (
	pm1EvtLen = 4
	pm1CntLen = 2
	pmTmrLen  = 4
)

// C2 and C3 latencies above 100 and 1000 us mean "not supported"; kvmm
// has no P_BLK, so the OS must not try them.
const (
	noC2Latency = 0x0FFF
	noC3Latency = 0x0FFF
)

// gas is a Generic Address Structure (ACPI 6.5 §5.2.3.2).
type gas struct {
	space  byte // 1 = SystemIO
	width  byte // register width in bits
	offset byte // bit offset
	access byte // 1 byte, 2 word, 3 dword, 4 qword
	addr   uint64
}

const (
	gasSystemIO    = 1
	gasAccessByte  = 1
	gasAccessWord  = 2
	gasAccessDWord = 3
)

func putGAS(b []byte, g gas) {
	b[0], b[1], b[2], b[3] = g.space, g.width, g.offset, g.access
	binary.LittleEndian.PutUint64(b[4:], g.addr)
}

// buildFADT is a full (not hardware-reduced) FADT: the guest uses the fixed
// PM1 registers, the PM timer and the reset register of the PM block, and
// SMI_CMD 0 tells it the platform is already in ACPI mode. Every block is
// given both as a 32-bit port and as an X_ GAS with matching values, which
// is what ACPICA checks for consistency.
func buildFADT(facs, dsdt uint64) []byte {
	t := newTable("FACP", fadtRevision, fadtLen)
	le := binary.LittleEndian
	le.PutUint32(t[fadtFirmwareCtrl:], uint32(facs))
	le.PutUint32(t[fadtDSDT:], uint32(dsdt))
	le.PutUint16(t[fadtSCIInt:], layout.SCIIRQ)
	le.PutUint32(t[fadtSMICmd:], 0)
	le.PutUint32(t[fadtPM1aEvtBlk:], layout.PM1aEvtBlk)
	le.PutUint32(t[fadtPM1aCntBlk:], layout.PM1aCntBlk)
	le.PutUint32(t[fadtPMTmrBlk:], layout.PMTmrBlk)
	le.PutUint32(t[fadtGPE0Blk:], layout.GPE0Blk)
	t[fadtPM1EvtLen] = pm1EvtLen
	t[fadtPM1CntLen] = pm1CntLen
	t[fadtPMTmrLen] = pmTmrLen
	t[fadtGPE0BlkLen] = layout.GPE0BlkLen
	le.PutUint16(t[fadtPLvl2Lat:], noC2Latency)
	le.PutUint16(t[fadtPLvl3Lat:], noC3Latency)
	le.PutUint16(t[fadtIAPCBootArch:], bootArchLegacyDevices|bootArch8042|bootArchVGANotPresent)
	// PWR_BUTTON stays 0 (fixed power button present), HW_REDUCED and
	// LOW_POWER_S0 stay 0 so Linux offers S3 ("deep") rather than s2idle.
	// TMR_VAL_EXT: the PM timer is 32 bits wide (pm.go).
	le.PutUint32(t[fadtFlags:], fadtFlagWBINVD|fadtFlagProcC1|fadtFlagSlpButton|
		fadtFlagTmrValExt|fadtFlagResetRegSup)
	putGAS(t[fadtResetReg:], gas{gasSystemIO, 8, 0, gasAccessByte, layout.ResetReg})
	t[fadtResetValue] = layout.ResetValue
	t[fadtMinorVersion] = fadtMinorRevision
	le.PutUint64(t[fadtXFirmwareCtrl:], facs)
	le.PutUint64(t[fadtXDSDT:], dsdt)
	putGAS(t[fadtXPM1aEvtBlk:], gas{gasSystemIO, 8 * pm1EvtLen, 0, gasAccessWord, layout.PM1aEvtBlk})
	putGAS(t[fadtXPM1aCntBlk:], gas{gasSystemIO, 8 * pm1CntLen, 0, gasAccessWord, layout.PM1aCntBlk})
	putGAS(t[fadtXPMTmrBlk:], gas{gasSystemIO, 8 * pmTmrLen, 0, gasAccessDWord, layout.PMTmrBlk})
	putGAS(t[fadtXGPE0Blk:], gas{gasSystemIO, 8 * layout.GPE0BlkLen, 0, gasAccessByte, layout.GPE0Blk})
	setChecksum(t, 9)
	return t
}
