package vcpu

import (
	"fmt"

	"github.com/bobuhiro11/gokvm/kvm"
)

// Control register and EFER bits used by the boot states.
const (
	cr0PE   = 1 << 0
	cr0ET   = 1 << 4
	cr0NE   = 1 << 5
	cr0PG   = 1 << 31
	cr4PAE  = 1 << 5
	eferLME = 1 << 8
	eferLMA = 1 << 10

	// Selectors of the boot GDT the loaders write: code at 0x10, data at
	// 0x18, as the Linux boot protocol documents (__BOOT_CS/__BOOT_DS).
	bootCS = 0x10
	bootDS = 0x18
)

// BootMode is the CPU state a kernel entry point expects.
type BootMode int

const (
	// BootLong64 is the 64-bit boot protocol: long mode, identity paging.
	BootLong64 BootMode = iota
	// BootPVH32 is the Xen PVH entry: 32-bit flat protected mode, no paging.
	BootPVH32
)

// BootState is the boot vCPU's initial register state.
type BootState struct {
	Mode     BootMode
	RIP      uint64
	RSI, RBX uint64
	RSP      uint64
	GDTBase  uint64
	GDTLimit uint16
	CR3      uint64 // BootLong64 only
}

func flatSegment(sel uint16, code, long bool) kvm.Segment {
	s := kvm.Segment{Base: 0, Limit: 0xFFFFFFFF, Selector: sel, Present: 1, S: 1, G: 1, DB: 1, Typ: 0x3}
	if code {
		s.Typ = 0xB // execute/read, accessed
		if long {
			s.L, s.DB = 1, 0
		}
	}
	return s
}

// SetBootState loads the boot state into the vCPU's registers.
func (v *VCPU) SetBootState(b BootState) error {
	sregs, err := kvm.GetSregs(v.fd)
	if err != nil {
		return fmt.Errorf("vcpu %d: KVM_GET_SREGS: %w", v.ID, err)
	}
	long := b.Mode == BootLong64
	cs := flatSegment(bootCS, true, long)
	ds := flatSegment(bootDS, false, false)
	sregs.CS = cs
	sregs.DS, sregs.ES, sregs.FS, sregs.GS, sregs.SS = ds, ds, ds, ds, ds
	// A usable TSS is required by VM entry even though nothing uses it.
	sregs.TR = kvm.Segment{Selector: 0, Limit: 0xFFFF, Typ: 0xB, Present: 1}
	sregs.GDT.Base, sregs.GDT.Limit = b.GDTBase, b.GDTLimit
	sregs.CR0 = cr0PE | cr0ET | cr0NE
	sregs.CR4, sregs.EFER, sregs.CR3 = 0, 0, 0
	if long {
		sregs.CR0 |= cr0PG
		sregs.CR4 = cr4PAE
		sregs.EFER = eferLME | eferLMA
		sregs.CR3 = b.CR3
	}
	if err := kvm.SetSregs(v.fd, sregs); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_SREGS: %w", v.ID, err)
	}
	regs := &kvm.Regs{RIP: b.RIP, RSI: b.RSI, RBX: b.RBX, RSP: b.RSP, RFLAGS: 0x2}
	if err := kvm.SetRegs(v.fd, regs); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_REGS: %w", v.ID, err)
	}
	return nil
}

// SetRealMode puts the vCPU in the state after a CPU reset, executing at
// cs:ip in real mode: what firmware does when it jumps to an ACPI waking
// vector.
func (v *VCPU) SetRealMode(cs uint16, ip uint16) error {
	sregs, err := kvm.GetSregs(v.fd)
	if err != nil {
		return fmt.Errorf("vcpu %d: KVM_GET_SREGS: %w", v.ID, err)
	}
	seg := func(sel uint16, typ uint8) kvm.Segment {
		return kvm.Segment{Base: uint64(sel) << 4, Limit: 0xFFFF, Selector: sel, Typ: typ, Present: 1, S: 1}
	}
	sregs.CS = seg(cs, 0xB)
	d := seg(0, 0x3)
	sregs.DS, sregs.ES, sregs.FS, sregs.GS, sregs.SS = d, d, d, d, d
	sregs.TR = kvm.Segment{Limit: 0xFFFF, Typ: 0xB, Present: 1}
	sregs.LDT = kvm.Segment{Limit: 0xFFFF, Typ: 0x2, Present: 1}
	sregs.GDT.Base, sregs.GDT.Limit = 0, 0xFFFF
	sregs.IDT.Base, sregs.IDT.Limit = 0, 0xFFFF
	sregs.CR0 = cr0ET
	sregs.CR3, sregs.CR4, sregs.EFER = 0, 0, 0
	if err := kvm.SetSregs(v.fd, sregs); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_SREGS: %w", v.ID, err)
	}
	if err := kvm.SetRegs(v.fd, &kvm.Regs{RIP: uint64(ip), RFLAGS: 0x2}); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_REGS: %w", v.ID, err)
	}
	return nil
}
