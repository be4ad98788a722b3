package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/kvmext"
)

// KVMRouter routes MSI vectors through KVM: each vector gets a GSI (from
// the allocator, 24 and up), an MSI route for that GSI and an eventfd bound
// to it with KVM_IRQFD. KVM_SET_GSI_ROUTING replaces the whole table, so
// the router keeps every MSI route of the VM and always sends them along
// with the irqchip routes KVM_CREATE_IRQCHIP installed for GSIs 0-23.
// One VM has exactly one KVMRouter.
type KVMRouter struct {
	log  *slog.Logger
	gsis *IDAllocator
	kvm  routeOps
	mu   sync.Mutex
	msi  map[uint32]kvmext.RoutingEntry
}

// routeOps are the two KVM calls the router makes; tests replace them.
type routeOps interface {
	SetGSIRouting(entries []kvmext.RoutingEntry) error
	IRQFD(fd int, gsi uint32, deassign bool) error
}

type vmRouteOps struct{ vmFd uintptr }

func (o vmRouteOps) SetGSIRouting(e []kvmext.RoutingEntry) error {
	return kvmext.SetGSIRouting(o.vmFd, e)
}

func (o vmRouteOps) IRQFD(fd int, gsi uint32, deassign bool) error {
	var flags uint32
	if deassign {
		flags = kvmext.IRQFDDeassign
	}
	return kvmext.IRQFD(o.vmFd, fd, gsi, flags, 0)
}

// NewKVMRouter returns the router of the VM vmFd; GSIs come from gsis.
func NewKVMRouter(vmFd uintptr, gsis *IDAllocator, log *slog.Logger) *KVMRouter {
	return newKVMRouter(vmRouteOps{vmFd}, gsis, log)
}

func newKVMRouter(ops routeOps, gsis *IDAllocator, log *slog.Logger) *KVMRouter {
	if log == nil {
		log = slog.Default()
	}
	return &KVMRouter{log: log, gsis: gsis, kvm: ops, msi: map[uint32]kvmext.RoutingEntry{}}
}

// Table is the routing table the router last sent (or would send): the
// default irqchip routes, then the MSI routes by GSI.
func (r *KVMRouter) Table() []kvmext.RoutingEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.table()
}

func (r *KVMRouter) table() []kvmext.RoutingEntry {
	t := kvmext.DefaultIRQChipRoutes()
	gsis := make([]uint32, 0, len(r.msi))
	for g := range r.msi {
		gsis = append(gsis, g)
	}
	sort.Slice(gsis, func(i, j int) bool { return gsis[i] < gsis[j] })
	for _, g := range gsis {
		t = append(t, r.msi[g])
	}
	return t
}

// setRoute installs (ok) or removes the MSI route of gsi and sends the
// table.
func (r *KVMRouter) setRoute(gsi uint32, e kvmext.RoutingEntry, ok bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old, had := r.msi[gsi]
	if ok {
		r.msi[gsi] = e
	} else {
		delete(r.msi, gsi)
	}
	if err := r.kvm.SetGSIRouting(r.table()); err != nil {
		if had {
			r.msi[gsi] = old
		} else {
			delete(r.msi, gsi)
		}
		return err
	}
	return nil
}

// NewVector allocates a GSI and an eventfd.
func (r *KVMRouter) NewVector() (MSIVector, error) {
	gsi, err := r.gsis.Alloc()
	if err != nil {
		return nil, fmt.Errorf("MSI vector GSI: %w", err)
	}
	// Non-blocking: Trigger must never stall a vCPU, and TakePending polls.
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = r.gsis.Free(gsi)
		return nil, fmt.Errorf("MSI vector eventfd: %w", err)
	}
	return &kvmVector{r: r, gsi: gsi, fd: fd}, nil
}

// kvmVector is one GSI + eventfd. MSIX serialises the calls.
type kvmVector struct {
	r        *KVMRouter
	gsi      uint32
	fd       int
	routed   bool
	attached bool
}

func (v *kvmVector) SetMessage(addr uint64, data uint32) error {
	if err := v.r.setRoute(v.gsi, kvmext.MSIRoute(v.gsi, addr, data), true); err != nil {
		return fmt.Errorf("GSI %d -> MSI %#x/%#x: %w", v.gsi, addr, data, err)
	}
	v.routed = true
	return nil
}

func (v *kvmVector) Attach(on bool) error {
	if on == v.attached {
		return nil
	}
	if on && !v.routed {
		return fmt.Errorf("GSI %d: attach before a message was set", v.gsi)
	}
	if err := v.r.kvm.IRQFD(v.fd, v.gsi, !on); err != nil {
		return fmt.Errorf("GSI %d: %w", v.gsi, err)
	}
	v.attached = on
	return nil
}

func (v *kvmVector) Trigger() error { return signalEventfd(v.fd) }

func (v *kvmVector) TakePending() (bool, error) {
	var b [8]byte
	n, err := unix.Read(v.fd, b[:])
	if errors.Is(err, unix.EAGAIN) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read eventfd of GSI %d: %w", v.gsi, err)
	}
	return n == 8 && binary.LittleEndian.Uint64(b[:]) > 0, nil
}

func (v *kvmVector) Pending() bool { return eventfdReadable(v.fd) }

func (v *kvmVector) EventFD() int { return v.fd }

func (v *kvmVector) Close() error {
	var errs []error
	if v.attached {
		errs = append(errs, v.r.kvm.IRQFD(v.fd, v.gsi, true))
		v.attached = false
	}
	if v.routed {
		errs = append(errs, v.r.setRoute(v.gsi, kvmext.RoutingEntry{}, false))
		v.routed = false
	}
	if v.fd >= 0 {
		errs = append(errs, unix.Close(v.fd))
		v.fd = -1
	}
	errs = append(errs, v.r.gsis.Free(v.gsi))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing MSI vector (GSI %d): %w", v.gsi, err)
	}
	return nil
}

// signalEventfd adds one to an eventfd's counter.
func signalEventfd(fd int) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	if _, err := unix.Write(fd, b[:]); err != nil {
		return fmt.Errorf("write eventfd %d: %w", fd, err)
	}
	return nil
}

// eventfdReadable reports whether the counter is nonzero, without
// consuming it.
func eventfdReadable(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(p, 0)
	return err == nil && n > 0 && p[0].Revents&unix.POLLIN != 0
}
