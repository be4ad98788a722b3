package vhost

import (
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fakeVhost is a test double of /dev/vhost-net behind the device seam. It
// records every ioctl with its decoded argument and enforces the rules the
// kernel enforces (drivers/vhost/vhost.c, net.c in 6.1), so an ordering
// mistake fails here as it would on a real host:
//
//   - every ioctl but VHOST_SET_OWNER, VHOST_GET_FEATURES and
//     VHOST_SET_FEATURES needs an owner (EPERM); SET_OWNER twice is EBUSY;
//   - VHOST_SET_FEATURES takes only offered bits (EOPNOTSUPP);
//   - SET_VRING_NUM wants a power of two; NUM, BASE and ADDR are refused
//     while a backend is attached (EBUSY);
//   - SET_VRING_ADDR wants the parts aligned (EINVAL) and, here stricter
//     than the kernel (which only faults later, in the worker), inside a
//     region of the memory table already set (EFAULT);
//   - VHOST_NET_SET_BACKEND wants the ring's addresses set (EFAULT);
//   - VHOST_RESET_OWNER drops owner, features, memory table and rings.
//
// It adds what a test needs to see: which fds were closed, and where each
// ring "stopped" (advance simulates the worker consuming descriptors).
type fakeVhost struct {
	mu      sync.Mutex
	offered uint64
	nextFD  int
	inst    map[int]*fakeInstance // open instances by fd
	closed  []int
	calls   []fakeCall
	// failStep/failNth make the failNth (1-based) call of failStep fail
	// with failErr; failStep "open" fails an open.
	failStep string
	failNth  int
	failErr  error
	seen     map[string]int
}

type fakeInstance struct {
	owner    bool
	features uint64
	mem      []vhostMemoryRegion
	rings    [2]fakeRing
}

type fakeRing struct {
	num, base        uint32
	addr             *vhostVringAddr
	kick, call, errf int32
	backend          int32
}

// fakeCall is one recorded ioctl.
type fakeCall struct {
	fd    int
	step  string
	index uint32 // ring index, for per-ring requests
	num   uint32 // NUM, BASE (set) or GET_VRING_BASE (returned)
	file  int32  // KICK, CALL, ERR, BACKEND
	value uint64 // features
	addr  vhostVringAddr
	mem   []vhostMemoryRegion
}

func newFakeVhost(offered uint64) *fakeVhost {
	return &fakeVhost{offered: offered, nextFD: 100, inst: map[int]*fakeInstance{}, seen: map[string]int{}}
}

func (f *fakeVhost) failAt(step string, nth int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failStep, f.failNth, f.failErr = step, nth, err
	f.seen = map[string]int{}
}

// injected reports (and counts) whether this call of step must fail.
func (f *fakeVhost) injected(step string) error {
	f.seen[step]++
	if step == f.failStep && f.seen[step] == f.failNth {
		return f.failErr
	}
	return nil
}

func (f *fakeVhost) open() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("open"); err != nil {
		return -1, err
	}
	fd := f.nextFD
	f.nextFD++
	in := &fakeInstance{}
	for i := range in.rings {
		in.rings[i] = fakeRing{kick: -1, call: -1, errf: -1, backend: -1}
	}
	f.inst[fd] = in
	return fd, nil
}

func (f *fakeVhost) close(fd int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.inst[fd]; !ok {
		return fmt.Errorf("fake vhost: close of fd %d that is not open: %w", fd, unix.EBADF)
	}
	delete(f.inst, fd)
	f.closed = append(f.closed, fd)
	return nil
}

func (f *fakeVhost) ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	in, ok := f.inst[fd]
	if !ok {
		return unix.EBADF
	}
	c := fakeCall{fd: fd, step: ioctlName(req)}
	// Decode before the failure injection so a failed call is recorded
	// with its argument too.
	switch req {
	case ioctlVhostSetFeatures:
		c.value = *(*uint64)(arg)
	case ioctlVhostSetMemTable:
		m := (*vhostMemory)(arg)
		c.mem = append([]vhostMemoryRegion(nil), m.Regions[:m.NRegions]...)
	case ioctlVhostSetVringNum, ioctlVhostSetVringBase, ioctlVhostGetVringBase:
		s := (*vhostVringState)(arg)
		c.index, c.num = s.Index, s.Num
	case ioctlVhostSetVringAddr:
		c.addr = *(*vhostVringAddr)(arg)
		c.index = c.addr.Index
	case ioctlVhostSetVringKick, ioctlVhostSetVringCall, ioctlVhostSetVringErr, ioctlVhostNetSetBackend:
		v := (*vhostVringFile)(arg)
		c.index, c.file = v.Index, v.FD
	}
	err := f.injected(c.step)
	if err == nil {
		err = f.apply(in, req, arg, &c)
	}
	f.calls = append(f.calls, c)
	return err
}

// apply performs one ioctl on the instance's state, with the kernel's checks.
func (f *fakeVhost) apply(in *fakeInstance, req uintptr, arg unsafe.Pointer, c *fakeCall) error {
	switch req {
	case ioctlVhostSetOwner:
		if in.owner {
			return unix.EBUSY
		}
		in.owner = true
		return nil
	case ioctlVhostGetFeatures:
		*(*uint64)(arg) = f.offered
		c.value = f.offered
		return nil
	case ioctlVhostSetFeatures:
		if c.value&^f.offered != 0 {
			return unix.EOPNOTSUPP
		}
		in.features = c.value
		return nil
	}
	if !in.owner {
		return unix.EPERM
	}
	switch req {
	case ioctlVhostResetOwner:
		*in = fakeInstance{}
		for i := range in.rings {
			in.rings[i] = fakeRing{kick: -1, call: -1, errf: -1, backend: -1}
		}
		return nil
	case ioctlVhostSetMemTable:
		if len(c.mem) == 0 || len(c.mem) > maxMemRegions {
			return unix.E2BIG
		}
		in.mem = c.mem
		return nil
	}
	if c.index > 1 {
		return unix.ENOBUFS
	}
	r := &in.rings[c.index]
	switch req {
	case ioctlVhostSetVringNum, ioctlVhostSetVringBase, ioctlVhostSetVringAddr:
		if r.backend >= 0 {
			return unix.EBUSY
		}
	}
	switch req {
	case ioctlVhostSetVringNum:
		if c.num == 0 || c.num > 0xffff || c.num&(c.num-1) != 0 {
			return unix.EINVAL
		}
		r.num = c.num
	case ioctlVhostSetVringBase:
		if c.num > 0xffff {
			return unix.EINVAL
		}
		r.base = c.num
	case ioctlVhostSetVringAddr:
		a := c.addr
		if a.DescUserAddr%descAlign != 0 || a.AvailUserAddr%availAlign != 0 || a.UsedUserAddr%usedAlign != 0 {
			return unix.EINVAL
		}
		n := uint64(r.num)
		if n == 0 {
			return unix.EINVAL // the kernel checks the ring's size against num
		}
		for _, p := range []struct{ hva, len uint64 }{
			{a.DescUserAddr, 16 * n}, {a.AvailUserAddr, 6 + 2*n}, {a.UsedUserAddr, 6 + 8*n},
		} {
			if _, ok := in.gpa(p.hva, p.len); !ok {
				return unix.EFAULT
			}
		}
		if gpa, _ := in.gpa(a.UsedUserAddr, 1); gpa != a.LogGuestAddr {
			return unix.EINVAL // log address must be the used ring's GPA
		}
		r.addr = &a
	case ioctlVhostSetVringKick:
		r.kick = c.file
	case ioctlVhostSetVringCall:
		r.call = c.file
	case ioctlVhostSetVringErr:
		r.errf = c.file
	case ioctlVhostGetVringBase:
		// Also stops the ring, as in the kernel.
		(*vhostVringState)(arg).Num = r.base
		c.num = r.base
	case ioctlVhostNetSetBackend:
		if c.file >= 0 && r.addr == nil {
			return unix.EFAULT
		}
		r.backend = c.file
	default:
		return unix.ENOTTY
	}
	return nil
}

// gpa translates a host range through the memory table.
func (in *fakeInstance) gpa(hva, n uint64) (uint64, bool) {
	for _, m := range in.mem {
		if hva >= m.UserspaceAddr && hva-m.UserspaceAddr+n <= m.MemorySize {
			return m.GuestPhysAddr + (hva - m.UserspaceAddr), true
		}
	}
	return 0, false
}

// advance simulates the worker consuming n descriptors of a ring.
func (f *fakeVhost) advance(fd int, ring int, n uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := &f.inst[fd].rings[ring]
	r.base = (r.base + n) & 0xffff
}

func (f *fakeVhost) openFDs() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var fds []int
	for fd := range f.inst {
		fds = append(fds, fd)
	}
	return fds
}

func (f *fakeVhost) takeCalls() []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeVhost) instance(fd int) *fakeInstance {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inst[fd]
}
