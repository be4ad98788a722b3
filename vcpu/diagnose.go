package vcpu

import (
	"fmt"
	"strings"

	"github.com/bobuhiro11/gokvm/kvm"

	"github.com/kvmm/kvmm/kvmext"
)

// dumpRegs formats the vCPU's registers for an error report.
func (v *VCPU) dumpRegs() string {
	r, err := kvm.GetRegs(v.fd)
	if err != nil {
		return fmt.Sprintf("registers unavailable: %v", err)
	}
	s, err := kvm.GetSregs(v.fd)
	if err != nil {
		return fmt.Sprintf("registers unavailable: %v", err)
	}
	return fmt.Sprintf("rip=%#x rsp=%#x rflags=%#x rax=%#x rbx=%#x rcx=%#x rdx=%#x rsi=%#x rdi=%#x rbp=%#x "+
		"cs=%#x(base %#x l=%d db=%d) ss=%#x cr0=%#x cr2=%#x cr3=%#x cr4=%#x efer=%#x",
		r.RIP, r.RSP, r.RFLAGS, r.RAX, r.RBX, r.RCX, r.RDX, r.RSI, r.RDI, r.RBP,
		s.CS.Selector, s.CS.Base, s.CS.L, s.CS.DB, s.SS.Selector, s.CR0, s.CR2, s.CR3, s.CR4, s.EFER)
}

// instructionBytes reads up to 15 bytes at the guest's current RIP through
// the vCPU's page tables.
func (v *VCPU) instructionBytes() ([]byte, error) {
	if v.ReadGuest == nil {
		return nil, fmt.Errorf("no guest memory reader")
	}
	r, err := kvm.GetRegs(v.fd)
	if err != nil {
		return nil, err
	}
	s, err := kvm.GetSregs(v.fd)
	if err != nil {
		return nil, err
	}
	linear := s.CS.Base + r.RIP
	if s.CS.L == 0 && s.CS.DB == 0 && s.CR0&cr0PE == 0 {
		linear = uint64(s.CS.Selector)<<4 + r.RIP&0xFFFF
	}
	t := &kvm.Translation{LinearAddress: linear}
	if err := kvm.Translate(v.fd, t); err != nil {
		return nil, fmt.Errorf("KVM_TRANSLATE %#x: %w", linear, err)
	}
	if t.Valid == 0 {
		return nil, fmt.Errorf("RIP linear address %#x is not mapped", linear)
	}
	b := make([]byte, 15)
	// Shrink the read at the end of RAM rather than fail it.
	for n := len(b); n > 0; n-- {
		if err := v.ReadGuest(t.PhysicalAddress, b[:n]); err == nil {
			return b[:n], nil
		}
	}
	return nil, fmt.Errorf("RIP physical address %#x is not RAM", t.PhysicalAddress)
}

// DiagnoseInstruction names the instructions this workplace's KVM emulator is
// known not to execute (guest-protocols.md section 5), from the bytes at RIP.
func DiagnoseInstruction(b []byte) string {
	i := 0
	rexW := false
	// Skip legacy prefixes and REX.
	for i < len(b) {
		c := b[i]
		if c == 0x66 || c == 0x67 || c == 0xF2 || c == 0xF3 || c == 0xF0 || c == 0x2E || c == 0x3E || c == 0x26 || c == 0x36 || c == 0x64 || c == 0x65 {
			i++
			continue
		}
		if c&0xF0 == 0x40 {
			rexW = c&0x08 != 0
			i++
			continue
		}
		break
	}
	if i >= len(b) {
		return "no instruction bytes"
	}
	op := b[i:]
	switch {
	case op[0] == 0xCC:
		return "INT3: breakpoint; the host's KVM emulator cannot deliver it in protected/long mode (no hardware virtualization)"
	case op[0] == 0xCD:
		return "INT n: software interrupt; the host's KVM emulator cannot deliver it in protected/long mode"
	case op[0] == 0xCF:
		if rexW {
			return "IRETQ: the host's KVM emulator cannot execute IRET in long mode (no hardware virtualization)"
		}
		return "IRET: the host's KVM emulator cannot execute IRET in protected mode (no hardware virtualization)"
	case len(op) >= 3 && op[0] == 0x0F && op[1] == 0xAE:
		switch (op[2] >> 3) & 7 {
		case 4:
			return "XSAVE: not supported by the host's KVM instruction emulator"
		case 5:
			return "XRSTOR: not supported by the host's KVM instruction emulator"
		}
	case len(op) >= 3 && op[0] == 0x0F && op[1] == 0xC7 && (op[2]>>3)&7 == 1 && rexW:
		return "CMPXCHG16B: not supported by the host's KVM instruction emulator"
	case len(op) >= 3 && op[0] == 0x0F && op[1] == 0x01 && (op[2] == 0xD0 || op[2] == 0xD1):
		return "XGETBV/XSETBV: not supported by the host's KVM instruction emulator"
	}
	return "instruction the host's KVM could not emulate"
}

func (v *VCPU) diagnoseInternal(sub uint32, data []uint64) string {
	var sb strings.Builder
	switch sub {
	case kvmext.InternalErrorEmulation:
		sb.WriteString("emulation failure")
		if b, err := v.instructionBytes(); err == nil {
			fmt.Fprintf(&sb, ": %s; bytes % x", DiagnoseInstruction(b), b)
		} else {
			fmt.Fprintf(&sb, " (instruction bytes unavailable: %v)", err)
		}
	case kvmext.InternalErrorSimulEx:
		sb.WriteString("exception while delivering an exception")
	case kvmext.InternalErrorDeliveryEv:
		sb.WriteString("event delivery failed")
	default:
		fmt.Fprintf(&sb, "suberror %d", sub)
	}
	if len(data) > 0 {
		fmt.Fprintf(&sb, "; data %#x", data)
	}
	sb.WriteString("; ")
	sb.WriteString(v.dumpRegs())
	return sb.String()
}
