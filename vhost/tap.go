package vhost

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tunPath is the tun/tap clone device.
const tunPath = "/dev/net/tun"

// tapAutoTemplate names auto-created taps; the kernel replaces %d with the
// first free number, atomically, so concurrent kvmm processes cannot collide.
const tapAutoTemplate = "kvmm%d"

// OffloadFlags maps the virtio-net features a driver acked to the tap's
// TUNSETOFFLOAD flags: the offloads the guest can receive (§4.2). The
// GUEST_* features depend on one another in the virtio spec (TSO and UFO
// need GUEST_CSUM, ECN needs TSO) and the kernel enforces the same (tun.c
// set_offload fails with EINVAL on TSO4 without CSUM, for instance), so a
// driver that acks a feature without its dependency gets the offload left
// off instead of a tap that refuses the whole set. HOST_* offloads need no
// flag: the guest's transmit side works through the vnet header alone.
func OffloadFlags(virtioFeatures uint64) uint {
	has := func(bit uint) bool { return virtioFeatures&(1<<bit) != 0 }
	if !has(FeatureNetGuestCsum) {
		return 0
	}
	flags := uint(TunFCsum)
	if has(FeatureNetGuestTSO4) {
		flags |= TunFTSO4
	}
	if has(FeatureNetGuestTSO6) {
		flags |= TunFTSO6
	}
	if has(FeatureNetGuestECN) && flags&(TunFTSO4|TunFTSO6) != 0 {
		flags |= TunFTSOECN
	}
	if has(FeatureNetGuestUFO) {
		flags |= TunFUFO
	}
	return flags
}

// Queue is one queue fd of a tap or macvtap: every Read returns one frame
// and every Write sends one, each prefixed by the TapVnetHdrLen-byte vnet
// header. The fd is non-blocking and registered with Go's poller, so Read
// parks the goroutine rather than a thread, and read deadlines work.
type Queue struct {
	f        *os.File
	rc       syscall.RawConn
	attached bool // guarded by the owning Tap's mu
}

// newQueue wraps an fd that is already attached to its interface. The fd is
// made non-blocking only now: Go's poller cannot register a tun fd before
// TUNSETIFF (golang/go#30426).
func newQueue(fd int, name string) (*Queue, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set %s queue non-blocking: %w", name, err)
	}
	return wrapQueue(os.NewFile(uintptr(fd), name))
}

func wrapQueue(f *os.File) (*Queue, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return &Queue{f: f, rc: rc, attached: true}, nil
}

// control runs fn on the fd while the file cannot be closed under it. It is
// used instead of os.File.Fd, which would switch the fd to blocking mode.
func (q *Queue) control(fn func(fd int) error) error {
	var err error
	if cerr := q.rc.Control(func(fd uintptr) { err = fn(int(fd)) }); cerr != nil {
		return cerr
	}
	return err
}

// FD is the fd number, for VHOST_NET_SET_BACKEND. It stays valid until the
// Tap is closed.
func (q *Queue) FD() int {
	fd := -1
	q.control(func(f int) error { fd = f; return nil })
	return fd
}

// Read reads one frame with its vnet header into p.
func (q *Queue) Read(p []byte) (int, error) { return q.f.Read(p) }

// Write sends one frame; p starts with the vnet header.
func (q *Queue) Write(p []byte) (int, error) { return q.f.Write(p) }

// SetReadDeadline bounds a blocked Read.
func (q *Queue) SetReadDeadline(t time.Time) error { return q.f.SetReadDeadline(t) }

// VnetHdrSize reads the queue's vnet header size back (TUNGETVNETHDRSZ).
func (q *Queue) VnetHdrSize() (int, error) {
	var n int32
	err := q.control(func(fd int) error { return ioctlPtr(fd, ioctlTunGetVnetHdrSz, unsafe.Pointer(&n)) })
	if err != nil {
		return 0, fmt.Errorf("TUNGETVNETHDRSZ: %w", err)
	}
	return int(n), nil
}

func (q *Queue) setVnetHdrSize(n int) error {
	v := int32(n)
	err := q.control(func(fd int) error { return ioctlPtr(fd, ioctlTunSetVnetHdrSz, unsafe.Pointer(&v)) })
	if err != nil {
		return fmt.Errorf("TUNSETVNETHDRSZ %d: %w", n, err)
	}
	return nil
}

func (q *Queue) setOffload(flags uint) error {
	err := q.control(func(fd int) error { return ioctlVal(fd, ioctlTunSetOffload, uintptr(flags)) })
	if err != nil {
		return fmt.Errorf("TUNSETOFFLOAD %#x: %w", flags, err)
	}
	return nil
}

func (q *Queue) setQueue(attach bool) error {
	flags, what := uint16(iffDetachQueue), "IFF_DETACH_QUEUE"
	if attach {
		flags, what = iffAttachQueue, "IFF_ATTACH_QUEUE"
	}
	req := newIfreq("", flags)
	err := q.control(func(fd int) error { return ioctlPtr(fd, ioctlTunSetQueue, unsafe.Pointer(&req)) })
	if err != nil {
		return fmt.Errorf("TUNSETQUEUE %s: %w", what, err)
	}
	return nil
}

// Tap is a host interface opened for a virtio-net device: a tun/tap device
// or a macvtap (whose character device speaks the same ioctls and frame
// format). One Queue per queue pair. Methods are safe for concurrent use.
//
// Its netlink calls (creation, Close) act in the network namespace of the
// calling OS thread, so Close must run where the Tap was opened; kvmm runs
// in one namespace, tests lock their thread into theirs.
type Tap struct {
	mu      sync.Mutex
	kind    NetKind
	name    string
	ifindex int
	mac     net.HardwareAddr // macvtap: the link's MAC, which the guest must use
	mq      bool             // tun IFF_MULTI_QUEUE (macvtap queues always are)
	queues  []*Queue
	created bool // kvmm created the link and deletes it on Close
	master  int  // existing tap: master to restore on Close, or -1 to leave it
	closed  bool
	log     *slog.Logger
}

// TapOptions selects a tap.
type TapOptions struct {
	// Name is an existing tap to use as it is (it is not removed on Close),
	// a name for a tap to create, or "" / TapAuto for a tap named kvmm%d.
	// Taps kvmm creates are non-persistent: they vanish with the last fd,
	// so not even a SIGKILL leaves one behind.
	Name string
	// Queues is the number of queue fds (queue pairs); 0 means 1. More than
	// one needs IFF_MULTI_QUEUE, which an existing tap must have been
	// created with.
	Queues int
	// Bridge, if set, is an existing bridge the tap joins.
	Bridge string
	// Cleanup, if set, gets the Tap's Close before anything is created, so
	// a signal during the set-up still removes what exists by then.
	Cleanup *Cleanup
	Log     *slog.Logger
}

// Open opens the host side of a --net option.
func Open(spec NetSpec, c *Cleanup, log *slog.Logger) (*Tap, error) {
	switch spec.Kind {
	case KindTap:
		return OpenTap(TapOptions{Name: spec.Tap, Queues: spec.Queues, Bridge: spec.Bridge, Cleanup: c, Log: log})
	case KindMacvtap:
		return OpenMacvtap(MacvtapOptions{Parent: spec.Parent, Mode: spec.Mode, Queues: spec.Queues, MAC: spec.MAC, Cleanup: c, Log: log})
	}
	return nil, fmt.Errorf("net: unknown kind %q", spec.Kind)
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

func queueCount(n int) (int, error) {
	if n == 0 {
		n = 1
	}
	if n < 1 || n > MaxQueuePairs {
		return 0, fmt.Errorf("%d queues: want 1..%d", n, MaxQueuePairs)
	}
	return n, nil
}

// checkTunFeatures asks the tun driver (TUNGETFEATURES) whether it has what
// kvmm needs, so an old or restricted kernel fails with a clear message
// instead of an EINVAL from TUNSETIFF.
func checkTunFeatures(multiQueue bool) error {
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", tunPath, err)
	}
	defer unix.Close(fd)
	var feat uint32
	if err := ioctlPtr(fd, ioctlTunGetFeatures, unsafe.Pointer(&feat)); err != nil {
		return fmt.Errorf("TUNGETFEATURES: %w", err)
	}
	need := uint32(iffTap | iffNoPI | iffVnetHdr)
	if multiQueue {
		need |= iffMultiQueue
	}
	if missing := need &^ feat; missing != 0 {
		return fmt.Errorf("TUNGETFEATURES: the tun driver lacks flags %#x (has %#x; kvmm needs IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, and IFF_MULTI_QUEUE for several queues)", missing, feat)
	}
	return nil
}

// openTunQueue attaches a new /dev/net/tun fd to the tap name (TUNSETIFF).
func openTunQueue(name string, flags uint16) (*Queue, error) {
	// Opened blocking: see newQueue.
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", tunPath, err)
	}
	req := newIfreq(name, flags)
	if err := ioctlPtr(fd, ioctlTunSetIff, unsafe.Pointer(&req)); err != nil {
		unix.Close(fd)
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("TUNSETIFF %s: the tap is in use by another process (or lacks multi_queue): %w", name, err)
		case errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("TUNSETIFF %s: the tap belongs to another user: %w", name, err)
		}
		return nil, fmt.Errorf("TUNSETIFF %s flags %#x: %w", name, flags, err)
	}
	return newQueue(fd, tunPath)
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// OpenTap opens (and if needed creates) a tap in the order of §4.3:
// TUNGETFEATURES, TUNSETIFF {IFF_TAP|IFF_NO_PI|IFF_VNET_HDR[|IFF_MULTI_QUEUE]}
// on each queue fd, TUNSETVNETHDRSZ(12) and TUNSETOFFLOAD(0) on each (the
// guest's offloads come with SetOffload after feature negotiation), link
// up, bridge. On error everything it did is undone.
func OpenTap(opts TapOptions) (*Tap, error) {
	queues, err := queueCount(opts.Queues)
	if err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	if err := checkTunFeatures(queues > 1); err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	t := &Tap{kind: KindTap, log: orDiscard(opts.Log), master: -1}
	var existing *netlink.Tuntap
	name := opts.Name
	if name == TapAuto {
		name = ""
	}
	if name != "" {
		if err := validIfName(name); err != nil {
			return nil, fmt.Errorf("tap %q: %w", name, err)
		}
		l, err := netlink.LinkByName(name)
		switch {
		case err == nil:
			tt, ok := l.(*netlink.Tuntap)
			if !ok {
				return nil, fmt.Errorf("tap %s: the link exists and is a %s, not a tap", name, l.Type())
			}
			if tt.Mode != netlink.TUNTAP_MODE_TAP {
				return nil, fmt.Errorf("tap %s: the link exists and is a tun (layer 3) device, not a tap", name)
			}
			existing = tt
		case isNotFound(err):
		default:
			return nil, fmt.Errorf("tap %s: look up link: %w", name, err)
		}
	}
	if opts.Cleanup != nil {
		// Registered before anything is created: Close undoes whatever
		// part of the set-up has happened, and a Close that runs first
		// (the signal path) makes the set-up undo its next step and fail.
		opts.Cleanup.Add(t.Close)
	}
	if existing != nil {
		err = t.attachExisting(existing, queues)
	} else {
		err = t.create(name, queues)
	}
	if err != nil {
		return nil, errors.Join(err, t.Close())
	}
	if err := t.configureQueues(); err != nil {
		return nil, errors.Join(err, t.Close())
	}
	link, err := netlink.LinkByIndex(t.ifindex)
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("tap %s: link up: %w", t.name, err), t.Close())
	}
	if opts.Bridge != "" {
		if err := t.joinBridge(link, opts.Bridge, existing != nil); err != nil {
			return nil, errors.Join(err, t.Close())
		}
	}
	t.log.Info("tap ready", "name", t.name, "ifindex", t.ifindex, "queues", queues, "created", t.created, "bridge", opts.Bridge)
	return t, nil
}

// errClosed reports a set-up abandoned because Close ran during it.
var errClosed = errors.New("closed during set-up")

// adopt records queues (and, for a link kvmm created, its identity) under
// the lock. If Close has already run, it undoes them instead: they appeared
// after Close looked.
func (t *Tap) adopt(qs []*Queue, created bool, name string, ifindex int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		for _, q := range qs {
			q.f.Close()
		}
		if created && ifindex != 0 {
			deleteLink(ifindex)
		}
		return fmt.Errorf("%s %s: %w", t.kind, name, errClosed)
	}
	if created {
		t.created, t.name, t.ifindex = true, name, ifindex
	}
	t.queues = append(t.queues, qs...)
	return nil
}

// wrapQueues wraps the files netlink opened; on error all are closed.
func wrapQueues(files []*os.File) ([]*Queue, error) {
	qs := make([]*Queue, 0, len(files))
	for i, f := range files {
		q, err := wrapQueue(f)
		if err != nil {
			for _, q := range qs {
				q.f.Close()
			}
			for _, f := range files[i+1:] {
				f.Close()
			}
			return nil, err
		}
		qs = append(qs, q)
	}
	return qs, nil
}

// create makes a non-persistent tap through netlink and opens its queues.
func (t *Tap) create(name string, queues int) error {
	if name == "" {
		name = tapAutoTemplate
	}
	flags := netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR
	if queues > 1 {
		flags |= netlink.TUNTAP_MULTI_QUEUE
	}
	attrs := netlink.NewLinkAttrs() // see createMacvtap on why not a literal
	attrs.Name = name
	tt := &netlink.Tuntap{
		LinkAttrs:  attrs,
		Mode:       netlink.TUNTAP_MODE_TAP,
		Flags:      flags,
		NonPersist: true,
		// One queue here: netlink v1.3.1 reuses the template name for
		// every queue of a multi-queue LinkAdd, which with kvmm%d creates
		// one tap per queue. AddQueues below uses the resolved name.
		Queues: 1,
		Owner:  uint32(os.Getuid()),
		Group:  uint32(os.Getgid()),
	}
	if err := netlink.LinkAdd(tt); err != nil {
		return fmt.Errorf("tap %s: create (TUNSETIFF): %w", name, err)
	}
	t.mq = queues > 1
	qs, err := wrapQueues(tt.Fds)
	if err != nil {
		deleteLink(tt.Index)
		return fmt.Errorf("tap %s: %w", tt.Name, err)
	}
	if err := t.adopt(qs, true, tt.Name, tt.Index); err != nil {
		return err
	}
	if tt.Index == 0 {
		return fmt.Errorf("tap %s: created but its ifindex is unknown", tt.Name)
	}
	if queues > 1 {
		fs, err := tt.AddQueues(queues - 1)
		if err != nil {
			return fmt.Errorf("tap %s: open queues 2..%d (TUNSETIFF IFF_MULTI_QUEUE): %w", tt.Name, queues, err)
		}
		qs, err := wrapQueues(fs)
		if err != nil {
			return fmt.Errorf("tap %s: %w", tt.Name, err)
		}
		if err := t.adopt(qs, false, tt.Name, 0); err != nil {
			return err
		}
	}
	t.log.Info("created tap", "name", tt.Name, "queues", queues)
	return nil
}

// attachExisting opens queue fds on a tap someone else created.
func (t *Tap) attachExisting(tt *netlink.Tuntap, queues int) error {
	t.mu.Lock()
	t.name = tt.Name
	t.ifindex = tt.Index
	t.mq = tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0
	t.mu.Unlock()
	if queues > 1 && !t.mq {
		return fmt.Errorf("tap %s was created without multi_queue and cannot serve %d queues (recreate it with `ip tuntap add dev %s mode tap multi_queue`)", tt.Name, queues, tt.Name)
	}
	flags := uint16(iffTap | iffNoPI | iffVnetHdr)
	if t.mq {
		// TUNSETIFF must repeat the device's multi-queue flag.
		flags |= iffMultiQueue
	}
	for i := 0; i < queues; i++ {
		q, err := openTunQueue(tt.Name, flags)
		if err != nil {
			return fmt.Errorf("tap %s queue %d: %w", tt.Name, i, err)
		}
		if err := t.adopt([]*Queue{q}, false, tt.Name, 0); err != nil {
			return err
		}
	}
	t.log.Info("using existing tap", "name", tt.Name, "queues", queues)
	return nil
}

// configureQueues sets the vnet header size and clears offloads on every
// queue. The header size is per device for tun but per queue for macvtap,
// so it goes to every fd.
func (t *Tap) configureQueues() error {
	for i, q := range t.queues {
		if err := q.setVnetHdrSize(TapVnetHdrLen); err != nil {
			return fmt.Errorf("%s %s queue %d: %w", t.kind, t.name, i, err)
		}
		// Offloads only once the guest has acked them (SetOffload); until
		// then the host must hand the guest complete packets.
		if err := q.setOffload(0); err != nil {
			return fmt.Errorf("%s %s queue %d: %w", t.kind, t.name, i, err)
		}
	}
	return nil
}

func (t *Tap) joinBridge(link netlink.Link, bridge string, existing bool) error {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("tap %s: bridge %s: %w", t.name, bridge, err)
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("tap %s: %s is a %s, not a bridge", t.name, bridge, br.Type())
	}
	prev := link.Attrs().MasterIndex
	if prev == br.Attrs().Index {
		return nil
	}
	if err := netlink.LinkSetMasterByIndex(link, br.Attrs().Index); err != nil {
		return fmt.Errorf("tap %s: join bridge %s: %w", t.name, bridge, err)
	}
	if existing {
		t.mu.Lock()
		t.master = prev
		t.mu.Unlock()
	}
	return nil
}

func deleteLink(index int) error {
	err := netlink.LinkDel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}})
	if err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// Kind is KindTap or KindMacvtap.
func (t *Tap) Kind() NetKind { return t.kind }

// Name is the interface name.
func (t *Tap) Name() string { return t.name }

// IfIndex is the interface index.
func (t *Tap) IfIndex() int { return t.ifindex }

// MAC is, for a macvtap, the link's address, which the guest must use as
// its own since the macvlan delivers only frames addressed to it; nil for a
// tap (any guest MAC works behind a tap).
func (t *Tap) MAC() net.HardwareAddr { return t.mac }

// Created reports whether kvmm created the link (and so removes it).
func (t *Tap) Created() bool { return t.created }

// Queues returns the queue fds, one per queue pair.
func (t *Tap) Queues() []*Queue { return t.queues }

// FDs returns the queue fd numbers, for StartConfig.TapFDs.
func (t *Tap) FDs() []int {
	fds := make([]int, len(t.queues))
	for i, q := range t.queues {
		fds[i] = q.FD()
	}
	return fds
}

// SetOffload applies the offloads a driver acked (OffloadFlags) to every
// queue.
func (t *Tap) SetOffload(virtioFeatures uint64) error {
	return t.setOffloadFlags(OffloadFlags(virtioFeatures))
}

func (t *Tap) setOffloadFlags(flags uint) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, q := range t.queues {
		if err := q.setOffload(flags); err != nil {
			return fmt.Errorf("%s %s queue %d: %w", t.kind, t.name, i, err)
		}
	}
	return nil
}

// SetActiveQueues keeps the first n queues attached and detaches the rest
// (TUNSETQUEUE), so the host steers no traffic to queue pairs the driver
// has not enabled (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET).
func (t *Tap) SetActiveQueues(n int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n < 1 || n > len(t.queues) {
		return fmt.Errorf("%s %s: %d active queues, want 1..%d", t.kind, t.name, n, len(t.queues))
	}
	// Attach before detaching so at least one queue is always attached.
	for i := 0; i < n; i++ {
		if q := t.queues[i]; !q.attached {
			if err := q.setQueue(true); err != nil {
				return fmt.Errorf("%s %s queue %d: %w", t.kind, t.name, i, err)
			}
			q.attached = true
		}
	}
	for i := n; i < len(t.queues); i++ {
		if q := t.queues[i]; q.attached {
			if err := q.setQueue(false); err != nil {
				return fmt.Errorf("%s %s queue %d: %w", t.kind, t.name, i, err)
			}
			q.attached = false
		}
	}
	return nil
}

// Close undoes what opening did: a link kvmm created is deleted (by index,
// while the open fds guarantee the index is still this link), an existing
// tap gets its previous bridge attachment back, and the fds are closed. Any
// vhost backend using the fds must be stopped first. Idempotent.
func (t *Tap) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	switch {
	case t.created && t.ifindex != 0:
		if err := deleteLink(t.ifindex); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: delete link: %w", t.kind, t.name, err))
		} else {
			t.log.Info("removed link", "kind", t.kind, "name", t.name)
		}
	case t.master >= 0:
		if err := restoreMaster(t.ifindex, t.master); err != nil {
			errs = append(errs, fmt.Errorf("tap %s: restore bridge attachment: %w", t.name, err))
		}
	}
	for i, q := range t.queues {
		if err := q.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s %s queue %d: close: %w", t.kind, t.name, i, err))
		}
	}
	return errors.Join(errs...)
}

func restoreMaster(ifindex, master int) error {
	link, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return err
	}
	if master == 0 {
		return netlink.LinkSetNoMaster(link)
	}
	return netlink.LinkSetMasterByIndex(link, master)
}
