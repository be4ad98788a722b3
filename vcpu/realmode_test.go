package vcpu

import (
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"
)

// testVM creates a VM with 1 MiB of RAM at 0 and an in-kernel irqchip,
// closed when the test ends.
func testVM(t *testing.T) (kvmFile *os.File, vmFd uintptr, mem []byte) {
	t.Helper()
	kf, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no /dev/kvm: %v", err)
	}
	t.Cleanup(func() { kf.Close() })
	vmFd, err = kvm.CreateVM(kf.Fd())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(int(vmFd)) })
	mem, err = unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	if err := kvm.SetUserMemoryRegion(vmFd, &kvm.UserspaceMemoryRegion{MemorySize: 1 << 20, UserspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0])))}); err != nil {
		t.Fatal(err)
	}
	if err := kvm.CreateIRQChip(vmFd); err != nil {
		t.Fatal(err)
	}
	return kf, vmFd, mem
}

type pioRecorder struct {
	ports []uint16
	data  []byte
	stop  func()
}

func (p *pioRecorder) PIO(v *VCPU, port uint16, data []byte, write bool) {
	p.ports = append(p.ports, port)
	p.data = append(p.data, data[0])
	p.stop()
}

func (p *pioRecorder) MMIO(v *VCPU, addr uint64, data []byte, write bool) {}

// TestSetRealMode enters real mode at CS:IP = 0x300:0 (linear 0x3000), as
// an S3 wake does, and checks the code there sees its CS.
func TestSetRealMode(t *testing.T) {
	kf, vmFd, mem := testVM(t)
	// cli; mov %cs,%ax; mov %ah,%al; out %al,$0x80; hlt
	copy(mem[0x3000:], []byte{0xfa, 0x8c, 0xc8, 0x88, 0xe0, 0xe6, 0x80, 0xf4})
	v, err := New(kf.Fd(), vmFd, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.SetRealMode(0x300, 0); err != nil {
		t.Fatal(err)
	}
	rec := &pioRecorder{stop: v.Stop}
	if err := v.Run(rec); err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(rec.ports) != 1 || rec.ports[0] != 0x80 || rec.data[0] != 0x03 {
		t.Fatalf("ports %#x data %#x, want one write of 0x03 to 0x80", rec.ports, rec.data)
	}
}

type parkOnFirst struct {
	n     atomic.Int32
	ports []byte // read after Run returned
}

func (p *parkOnFirst) PIO(v *VCPU, port uint16, data []byte, write bool) {
	p.ports = append(p.ports, data[0])
	if p.n.Add(1) == 1 {
		v.RequestPause()
		return
	}
	v.Stop()
}

func (p *parkOnFirst) MMIO(v *VCPU, addr uint64, data []byte, write bool) {}

// TestSetRealModeAfterExit replaces the state of a vCPU parked right after
// a port-I/O exit, as an S3 wake does after the guest's SLP_EN write.
func TestSetRealModeAfterExit(t *testing.T) {
	kf, vmFd, mem := testVM(t)
	// A: mov $0xAA,%al; out %al,$0x80; jmp .
	copy(mem[0x3000:], []byte{0xb0, 0xaa, 0xe6, 0x80, 0xeb, 0xfe})
	// B, a waking vector's first steps: cli; cld; mov %cs,%ax; xor %bx,%bx;
	// mov %bx,%ss; mov $0x4000,%sp; call 1f; 1: pop %cx; mov %ah,%al;
	// out %al,$0x80; hlt
	copy(mem[0x4000:], []byte{0xfa, 0xfc, 0x8c, 0xc8, 0x31, 0xdb, 0x8e, 0xd3, 0xbc, 0x00, 0x40, 0xe8, 0x00, 0x00, 0x59, 0x88, 0xe0, 0xe6, 0x80, 0xf4})
	v, err := New(kf.Fd(), vmFd, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	// Start A in 32-bit protected mode, as the guest that enters S3 is.
	le := func(off int, v uint64) {
		for i := 0; i < 8; i++ {
			mem[off+i] = byte(v >> (8 * i))
		}
	}
	le(0x510, 0x00CF9B000000FFFF)
	le(0x518, 0x00CF93000000FFFF)
	if err := v.SetBootState(BootState{Mode: BootPVH32, RIP: 0x3000, RSP: 0x2000, GDTBase: 0x500, GDTLimit: 0x1F}); err != nil {
		t.Fatal(err)
	}
	rec := &parkOnFirst{}
	done := make(chan error, 1)
	go func() { done <- v.Run(rec) }()
	v.RequestPause()
	v.WaitParked()
	for rec.n.Load() == 0 {
		v.Resume()
		v.RequestPause()
		v.WaitParked()
	}
	if err := v.SetRealMode(0x400, 0); err != nil {
		t.Fatal(err)
	}
	v.Resume()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(rec.ports) != 2 || rec.ports[1] != 0x04 {
		t.Fatalf("writes %#x, want 0xaa then 0x04", rec.ports)
	}
}
