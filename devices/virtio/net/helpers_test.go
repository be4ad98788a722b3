package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
	"github.com/kvmm/kvmm/vhost"
)

var testMAC = MAC{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// fakeHost is a Host whose queues are SOCK_SEQPACKET socket pairs: like a
// tap queue, each read returns one message (frame) and each write sends
// one, and both ends sit in Go's poller, so read deadlines work. The test
// holds the peer ends: what it writes the device reads as frames from the
// host, what the device writes the test reads as frames for the host.
type fakeHost struct {
	t     testing.TB
	ports []*os.File
	peers []*os.File

	mu       sync.Mutex
	offloads []uint64 // every SetOffload argument
	active   []int    // every SetActiveQueues argument
	noUFO    bool
}

func newFakeHost(t testing.TB, pairs int) *fakeHost {
	t.Helper()
	h := &fakeHost{t: t}
	for i := 0; i < pairs; i++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, fd := range fds {
			// Room for a few 64 KiB frames in flight.
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
		}
		h.ports = append(h.ports, os.NewFile(uintptr(fds[0]), fmt.Sprintf("port%d", i)))
		h.peers = append(h.peers, os.NewFile(uintptr(fds[1]), fmt.Sprintf("peer%d", i)))
	}
	t.Cleanup(func() {
		for i := range h.ports {
			h.ports[i].Close()
			h.peers[i].Close()
		}
	})
	return h
}

func (h *fakeHost) Ports() []Port {
	ps := make([]Port, len(h.ports))
	for i, f := range h.ports {
		ps[i] = f
	}
	return ps
}

func (h *fakeHost) FDs() []int {
	fds := make([]int, len(h.ports))
	for i := range h.ports {
		fds[i] = 1000 + i // never used as descriptors: only vhost doubles see them
	}
	return fds
}

func (h *fakeHost) SetOffload(features uint64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.noUFO && features&FeatureGuestUFO != 0 {
		return unix.EINVAL
	}
	h.offloads = append(h.offloads, features)
	return nil
}

func (h *fakeHost) SetActiveQueues(n int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n < 1 || n > len(h.ports) {
		return unix.EINVAL
	}
	h.active = append(h.active, n)
	return nil
}

func (h *fakeHost) lastOffload() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.offloads) == 0 {
		return ^uint64(0)
	}
	return h.offloads[len(h.offloads)-1]
}

func (h *fakeHost) activeCalls() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.active...)
}

// inject sends a frame from the host to the guest on pair p.
func (h *fakeHost) inject(p int, frame []byte) {
	h.t.Helper()
	if _, err := h.peers[p].Write(frame); err != nil {
		h.t.Fatalf("inject on pair %d: %v", p, err)
	}
}

// recv waits for the frame the guest sent on pair p.
func (h *fakeHost) recv(p int, timeout time.Duration) ([]byte, error) {
	buf := make([]byte, MaxFrameLen+1)
	_ = h.peers[p].SetReadDeadline(time.Now().Add(timeout))
	n, err := h.peers[p].Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// noFrame checks that the guest sent nothing on pair p for a while.
func (h *fakeHost) noFrame(p int, wait time.Duration) {
	h.t.Helper()
	if f, err := h.recv(p, wait); err == nil {
		h.t.Fatalf("unexpected frame on pair %d: % x", p, f)
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		h.t.Fatal(err)
	}
}

// frame builds a header and an Ethernet frame of n bytes (n >= 14) whose
// payload is a pattern derived from seed.
func frame(hdr vhost.VnetHdr, n int, seed byte) []byte {
	b := make([]byte, HdrLen+n)
	hdr.Put(b)
	f := b[HdrLen:]
	copy(f[0:], []byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56})
	copy(f[6:], []byte{0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], 0x88B5) // IEEE local experimental
	for i := 14; i < n; i++ {
		f[i] = seed + byte(i)
	}
	return b
}

// newTestNet builds a device on a fake host.
func newTestNet(t testing.TB, h *fakeHost, vb VhostBackend) *Net {
	t.Helper()
	d, err := New(Config{MAC: testMAC, Host: h, Vhost: vb, QueueSize: 64, Name: t.Name(), Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// testLog discards device logs unless the test runs with -v.
func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, nil)).With("dev", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// baseFeatures is what a minimal modern driver acks.
const baseFeatures uint64 = virtio.FeatureVersion1 | FeatureMAC | FeatureStatus

// queueSizes lists n queue sizes for Harness.Init.
func queueSizes(n int, size uint16) []uint16 {
	s := make([]uint16, n)
	for i := range s {
		s[i] = size
	}
	return s
}

// guestBuf is a receive buffer the test driver posted.
type guestBuf struct {
	addr uint64
	len  uint32
}

// postRx makes n receive buffers of size bytes available on q (one
// descriptor each) and notifies.
func postRx(h *virtiotest.Harness, q *virtiotest.DriverQueue, n int, size uint32) map[uint16]guestBuf {
	bufs := map[uint16]guestBuf{}
	for i := 0; i < n; i++ {
		a := h.Alloc(uint64(size), 8)
		head := q.AddAndPublish(virtiotest.Buf{Addr: a, Len: size, Write: true})
		bufs[head] = guestBuf{a, size}
	}
	h.Notify(q.Index)
	return bufs
}

// readGuest reads n bytes of guest memory.
func readGuest(t testing.TB, h *virtiotest.Harness, addr uint64, n uint32) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := h.Mem.Read(addr, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// sendTx makes one transmit chain of bufs (copied into fresh guest
// memory, one descriptor each) available and notifies.
func sendTx(h *virtiotest.Harness, q *virtiotest.DriverQueue, parts ...[]byte) uint16 {
	var bufs []virtiotest.Buf
	for _, p := range parts {
		a := h.Alloc(uint64(len(p)), 8)
		if err := h.Mem.Write(a, p); err != nil {
			h.T.Fatal(err)
		}
		bufs = append(bufs, virtiotest.Buf{Addr: a, Len: uint32(len(p))})
	}
	head := q.AddAndPublish(bufs...)
	h.Notify(q.Index)
	return head
}

// ctrlCmd sends one control request and returns its ack byte.
func ctrlCmd(t testing.TB, h *virtiotest.Harness, q *virtiotest.DriverQueue, class, cmd byte, data []byte) byte {
	t.Helper()
	req := h.Alloc(uint64(2+len(data)), 8)
	if err := h.Mem.Write(req, append([]byte{class, cmd}, data...)); err != nil {
		t.Fatal(err)
	}
	ack := h.Alloc(1, 8)
	if err := h.Mem.Write(ack, []byte{0xEE}); err != nil {
		t.Fatal(err)
	}
	// Header and data in separate descriptors, as Linux's
	// virtnet_send_command does.
	bufs := []virtiotest.Buf{{Addr: req, Len: 2}}
	if len(data) > 0 {
		bufs = append(bufs, virtiotest.Buf{Addr: req + 2, Len: uint32(len(data))})
	}
	bufs = append(bufs, virtiotest.Buf{Addr: ack, Len: 1, Write: true})
	n, ok := q.Submit(5*time.Second, bufs...)
	if !ok {
		t.Fatalf("control command %d/%d not completed", class, cmd)
	}
	if n != 1 {
		t.Errorf("control command %d/%d: used length %d, want 1", class, cmd, n)
	}
	return readGuest(t, h, ack, 1)[0]
}

// waitFor polls cond (the test driver has no interrupt handler).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Microsecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// goroutinesBack waits for the goroutine count to return to base.
func goroutinesBack(t testing.TB, base int) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if runtime.NumGoroutine() <= base {
			return
		}
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
}

func equalFrames(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got %d bytes % x..., want %d bytes % x...", what, len(got), head(got), len(want), head(want))
	}
}

func head(b []byte) []byte { return b[:min(len(b), 32)] }
