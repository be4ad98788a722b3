package kvmext

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"
	"unsafe"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"
)

// iocUAPI is _IOC from include/uapi/asm-generic/ioctl.h (x86): dir in bits
// 31:30 (1 = write, 2 = read), size in 29:16, type in 15:8, nr in 7:0.
func iocUAPI(dir, typ, nr, size uintptr) uintptr { return dir<<30 | size<<16 | typ<<8 | nr }

const (
	uapiWrite = 1 // _IOC_WRITE
	uapiRead  = 2 // _IOC_READ
	kvmio     = 0xAE
)

func TestMSRIoctlNumbers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
		literal   uintptr // as printed by a C program including <linux/kvm.h>
	}{
		// _IOW(KVMIO, 0xc6, struct kvm_msr_filter), 392 bytes.
		{"KVM_X86_SET_MSR_FILTER", kvmX86SetMSRFilter, iocUAPI(uapiWrite, kvmio, 0xc6, 392), 0x4188AEC6},
		// _IOWR(KVMIO, 0xc1, struct kvm_cpuid2), the 8-byte header.
		{"KVM_GET_SUPPORTED_HV_CPUID", kvmGetSupportedHVCPUID, iocUAPI(uapiRead|uapiWrite, kvmio, 0xc1, 8), 0xC008AEC1},
		// _IOWR(KVMIO, 0x88, struct kvm_msrs) and _IOW(KVMIO, 0x89, ...).
		{"KVM_GET_MSRS", kvmGetMSRs, iocUAPI(uapiRead|uapiWrite, kvmio, 0x88, 8), 0xC008AE88},
		{"KVM_SET_MSRS", kvmSetMSRs, iocUAPI(uapiWrite, kvmio, 0x89, 8), 0x4008AE89},
	} {
		if tc.got != tc.want || tc.want != tc.literal {
			t.Errorf("%s = %#x, computed from the UAPI %#x, literal %#x", tc.name, tc.got, tc.want, tc.literal)
		}
	}
}

// TestMSRStructLayouts checks the Go structs against the x86-64 UAPI
// layouts (arch/x86/include/uapi/asm/kvm.h, include/uapi/linux/kvm.h).
func TestMSRStructLayouts(t *testing.T) {
	var r msrFilterRange
	var f msrFilter
	var c hvCPUID
	var m oneMSR
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(struct kvm_msr_filter_range)", unsafe.Sizeof(r), 24},
		{"offsetof(kvm_msr_filter_range, nmsrs)", unsafe.Offsetof(r.NMSRs), 4},
		{"offsetof(kvm_msr_filter_range, base)", unsafe.Offsetof(r.Base), 8},
		{"offsetof(kvm_msr_filter_range, bitmap)", unsafe.Offsetof(r.Bitmap), 16},
		{"sizeof(struct kvm_msr_filter)", unsafe.Sizeof(f), 392},
		{"offsetof(kvm_msr_filter, ranges)", unsafe.Offsetof(f.Ranges), 8},
		{"sizeof(struct kvm_cpuid_entry2)", unsafe.Sizeof(kvm.CPUIDEntry2{}), 40},
		{"offsetof(kvm_cpuid2, entries)", unsafe.Offsetof(c.Entries), 8},
		{"sizeof(kvm_msrs + 1 kvm_msr_entry)", unsafe.Sizeof(m), 8 + 16},
		{"offsetof(kvm_msr_entry, data)", unsafe.Offsetof(m.Data) - 8, 8},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	if MSRFilterMaxRanges != 16 || MSRFilterMaxBitmapBytes != 0x600 {
		t.Errorf("KVM_MSR_FILTER_MAX_RANGES %d, KVM_MSR_FILTER_MAX_BITMAP_SIZE %#x", MSRFilterMaxRanges, MSRFilterMaxBitmapBytes)
	}
}

func TestMSRCapabilityNumbers(t *testing.T) {
	// include/uapi/linux/kvm.h
	for _, tc := range []struct {
		name      string
		got, want int
	}{
		{"KVM_CAP_HYPERV", CapHyperV, 44},
		{"KVM_CAP_HYPERV_TIME", CapHyperVTime, 96},
		{"KVM_CAP_HYPERV_SYNIC2", CapHyperVSynIC2, 148},
		{"KVM_CAP_HYPERV_VP_INDEX", CapHyperVVPIndex, 149},
		{"KVM_CAP_HYPERV_CPUID", CapHyperVCPUID, 167},
		{"KVM_CAP_X86_USER_SPACE_MSR", CapX86UserSpaceMSR, 188},
		{"KVM_CAP_X86_MSR_FILTER", CapX86MSRFilter, 189},
		{"KVM_CAP_SYS_HYPERV_CPUID", CapSysHyperVCPUID, 191},
		{"KVM_CAP_HYPERV_ENFORCE_CPUID", CapHyperVEnforceCPUID, 199},
		{"KVM_MSR_EXIT_REASON_INVAL", MSRExitReasonInval, 1},
		{"KVM_MSR_EXIT_REASON_UNKNOWN", MSRExitReasonUnknown, 2},
		{"KVM_MSR_EXIT_REASON_FILTER", MSRExitReasonFilter, 4},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

// TestRunMSRLayout: struct kvm_run's msr member is {u8 error; u8 pad[7];
// u32 reason; u32 index; u64 data} at offset 32.
func TestRunMSRLayout(t *testing.T) {
	r := &Run{b: make([]byte, minRunSize)}
	u := r.b[32:]
	binary.LittleEndian.PutUint32(u[8:], MSRExitReasonFilter)
	binary.LittleEndian.PutUint32(u[12:], 0x40000021)
	binary.LittleEndian.PutUint64(u[16:], 0x1234_5000_0001)
	idx, data := r.MSR()
	if r.MSRReason() != MSRExitReasonFilter || idx != 0x40000021 || data != 0x1234_5000_0001 {
		t.Errorf("reason %d index %#x data %#x", r.MSRReason(), idx, data)
	}
	r.CompleteMSR(7, true)
	if u[0] != 1 || binary.LittleEndian.Uint64(u[16:]) != 7 {
		t.Errorf("CompleteMSR: error byte %d data %d", u[0], binary.LittleEndian.Uint64(u[16:]))
	}
}

func TestSetMSRFilterRefusesBadRanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ranges []MSRFilterRange
	}{
		{"empty range", []MSRFilterRange{{Flags: MSRFilterRead, NMSRs: 0, Bitmap: make([]byte, 8)}}},
		{"short bitmap", []MSRFilterRange{{Flags: MSRFilterRead, NMSRs: 65, Bitmap: make([]byte, 8)}}},
		{"huge range", []MSRFilterRange{{Flags: MSRFilterRead, NMSRs: 0x10000, Bitmap: make([]byte, 0x2000)}}},
		{"too many ranges", make([]MSRFilterRange, MSRFilterMaxRanges+1)},
	} {
		// fd -1: the checks must fail before any ioctl.
		if err := SetMSRFilter(^uintptr(0), 0, tc.ranges); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if n := MSRFilterBitmapBytes(0x200); n != 64 {
		t.Errorf("bitmap bytes for 0x200 MSRs = %d, want 64", n)
	}
	if n := MSRFilterBitmapBytes(6); n != 8 {
		t.Errorf("bitmap bytes for 6 MSRs = %d, want 8 (one long)", n)
	}
}

// TestUserSpaceMSRExitsOnKVM runs a few real-mode instructions under
// /dev/kvm to check the MSR plumbing end to end: an RDMSR and a WRMSR of
// synthetic MSRs reach user space, through the filter (reason FILTER) and,
// without it, as the fallback unknown-MSR exits (reason UNKNOWN, on a host
// whose KVM has no in-kernel Hyper-V); the value user space completes an
// RDMSR with lands in EDX:EAX; GetMSR reads the TSC.
func TestUserSpaceMSRExitsOnKVM(t *testing.T) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no usable /dev/kvm: %v", err)
	}
	defer f.Close()
	kvmFd := f.Fd()
	if n, _ := CheckExtension(kvmFd, CapX86UserSpaceMSR); n == 0 {
		t.Skip("host KVM lacks KVM_CAP_X86_USER_SPACE_MSR")
	}
	hasFilter, _ := CheckExtension(kvmFd, CapX86MSRFilter)
	kernelHV, _ := CheckExtension(kvmFd, CapHyperV)
	for _, filter := range []bool{true, false} {
		t.Run(fmt.Sprintf("filter=%v", filter), func(t *testing.T) {
			if filter && hasFilter == 0 {
				t.Skip("host KVM lacks KVM_CAP_X86_MSR_FILTER")
			}
			if !filter && kernelHV != 0 {
				t.Skip("the in-kernel Hyper-V serves these MSRs without a filter")
			}
			runMSRGuest(t, kvmFd, filter)
		})
	}
}

func runMSRGuest(t *testing.T, kvmFd uintptr, filter bool) {
	vmFd, err := kvm.CreateVM(kvmFd)
	if err != nil {
		t.Fatalf("KVM_CREATE_VM: %v", err)
	}
	defer unix.Close(int(vmFd))
	if err := kvm.SetTSSAddr(vmFd, 0xFFFBD000); err != nil {
		t.Fatalf("KVM_SET_TSS_ADDR: %v", err)
	}
	if err := kvm.SetIdentityMapAddr(vmFd, 0xFFFBC000); err != nil {
		t.Fatalf("KVM_SET_IDENTITY_MAP_ADDR: %v", err)
	}
	mem, err := unix.Mmap(-1, 0, 0x10000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	// 16-bit code at 0x1000.
	copy(mem[0x1000:], []byte{
		0x66, 0xB9, 0x20, 0x00, 0x00, 0x40, // mov ecx, 0x40000020 (TIME_REF_COUNT)
		0x0F, 0x32, // rdmsr
		0x66, 0x89, 0xC3, // mov ebx, eax
		0x66, 0xB9, 0x01, 0x00, 0x00, 0x40, // mov ecx, 0x40000001 (HYPERCALL)
		0x66, 0xB8, 0x01, 0x10, 0x00, 0x00, // mov eax, 0x1001
		0x66, 0x31, 0xD2, // xor edx, edx
		0x0F, 0x30, // wrmsr
		0xF4, // hlt
	})
	region := &kvm.UserspaceMemoryRegion{Slot: 0, GuestPhysAddr: 0, MemorySize: uint64(len(mem)),
		UserspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if err := kvm.SetUserMemoryRegion(vmFd, region); err != nil {
		t.Fatalf("KVM_SET_USER_MEMORY_REGION: %v", err)
	}
	mask := uint64(MSRExitReasonInval | MSRExitReasonUnknown)
	wantReason := uint32(MSRExitReasonUnknown)
	if filter {
		mask |= MSRExitReasonFilter
		wantReason = MSRExitReasonFilter
	}
	if err := EnableUserSpaceMSR(vmFd, mask); err != nil {
		t.Fatal(err)
	}
	if filter {
		deny := MSRFilterRange{Flags: MSRFilterRead | MSRFilterWrite, Base: 0x40000000, NMSRs: 0x200,
			Bitmap: make([]byte, MSRFilterBitmapBytes(0x200))}
		if err := SetMSRFilter(vmFd, 0, []MSRFilterRange{deny}); err != nil {
			t.Fatal(err)
		}
	}
	vcpuFd, err := kvm.CreateVCPU(vmFd, 0)
	if err != nil {
		t.Fatalf("KVM_CREATE_VCPU: %v", err)
	}
	defer unix.Close(int(vcpuFd))
	run, err := MapRun(kvmFd, vcpuFd)
	if err != nil {
		t.Fatal(err)
	}
	defer run.Close()
	sregs, err := kvm.GetSregs(vcpuFd)
	if err != nil {
		t.Fatal(err)
	}
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	if err := kvm.SetSregs(vcpuFd, sregs); err != nil {
		t.Fatal(err)
	}
	regs, err := kvm.GetRegs(vcpuFd)
	if err != nil {
		t.Fatal(err)
	}
	regs.RIP, regs.RFLAGS = 0x1000, 2
	if err := kvm.SetRegs(vcpuFd, regs); err != nil {
		t.Fatal(err)
	}
	kvmRun := func() uint32 {
		t.Helper()
		for {
			if _, err := kvm.Ioctl(vcpuFd, kvm.IIO(0x80), 0); err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				t.Fatalf("KVM_RUN: %v", err)
			}
			return run.ExitReason()
		}
	}
	if r := kvmRun(); r != ExitX86RDMSR {
		t.Fatalf("exit %s, want x86_rdmsr", ExitReasonName(r))
	}
	if idx, _ := run.MSR(); idx != 0x40000020 || run.MSRReason() != wantReason {
		t.Fatalf("rdmsr exit index %#x reason %d, want 0x40000020 reason %d", idx, run.MSRReason(), wantReason)
	}
	run.CompleteMSR(12345, false)
	if r := kvmRun(); r != ExitX86WRMSR {
		t.Fatalf("exit %s, want x86_wrmsr", ExitReasonName(r))
	}
	if idx, data := run.MSR(); idx != 0x40000001 || data != 0x1001 || run.MSRReason() != wantReason {
		t.Fatalf("wrmsr exit index %#x data %#x reason %d", idx, data, run.MSRReason())
	}
	run.CompleteMSR(0, false)
	if r := kvmRun(); r != ExitHLT {
		t.Fatalf("exit %s, want hlt", ExitReasonName(r))
	}
	regs, err = kvm.GetRegs(vcpuFd)
	if err != nil {
		t.Fatal(err)
	}
	if regs.RBX&0xFFFFFFFF != 12345 {
		t.Errorf("EBX = %d after the rdmsr, want 12345", regs.RBX)
	}
	if _, err := GetMSR(vcpuFd, 0x10); err != nil {
		t.Errorf("GetMSR(IA32_TSC): %v", err)
	}
	if _, err := GetMSR(vcpuFd, 0xC0DE0000); err == nil {
		t.Error("GetMSR of a nonexistent MSR succeeded")
	}
}
