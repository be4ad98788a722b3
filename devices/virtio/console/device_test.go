package console

import (
	"bytes"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvmm/kvmm/devices/pci"
	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
)

const waitTime = 5 * time.Second

var quiet = slog.New(slog.DiscardHandler)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) waitFor(want string) bool {
	for end := time.Now().Add(waitTime); time.Now().Before(end); time.Sleep(100 * time.Microsecond) {
		if strings.Contains(s.String(), want) {
			return true
		}
	}
	return false
}

func newConsole(t *testing.T) (*Device, *syncBuffer, *virtiotest.Harness) {
	out := &syncBuffer{}
	d, err := New(Config{Output: out, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	return d, out, h
}

func feat() uint64 { return virtio.FeatureVersion1 | virtio.FeatureEventIdx }

func TestTransmit(t *testing.T) {
	d, out, h := newConsole(t)
	if h.ConfigRead16(pci.RegDeviceID) != 0x1043 || h.ConfigRead32(pci.RegRevision)>>8 != 0x078000 {
		t.Errorf("device %#x class %#x", h.ConfigRead16(pci.RegDeviceID), h.ConfigRead32(pci.RegRevision)>>8)
	}
	qs := h.Init(feat(), 16, 16)
	a, b := h.Alloc(64, 8), h.Alloc(8192, 8)
	_ = h.Mem.Write(a, []byte("hello, "))
	big := strings.Repeat("0123456789abcdef", 512)
	_ = h.Mem.Write(b, []byte(big))
	if n, ok := qs[TxQueue].Submit(waitTime, virtiotest.Buf{Addr: a, Len: 7}, virtiotest.Buf{Addr: b, Len: 8192}); !ok || n != 0 {
		t.Fatalf("transmit: used %d ok %v", n, ok)
	}
	if got := out.String(); got != "hello, "+big {
		t.Fatalf("output %d bytes: %.40q", len(got), got)
	}
	// emerg_wr, as early output.
	h.MMIOWrite(h.BAR+virtio.DeviceCfgOffset+8, 4, '!')
	if !strings.HasSuffix(out.String(), "!") || d.Metrics().EmergWrites != 1 {
		t.Error("emerg_wr not output")
	}
	if ports := h.DeviceConfig(4, 4); ports[0] != 1 {
		t.Errorf("max_nr_ports %v", ports)
	}
}

func TestReceive(t *testing.T) {
	d, _, h := newConsole(t)
	// Typed before the driver is up: kept.
	if n := d.Enqueue([]byte("early ")); n != 6 {
		t.Fatal(n)
	}
	qs := h.Init(feat(), 16, 16)
	rx := qs[RxQueue]
	buf := h.Alloc(4096, 8)
	read := func(want string) {
		t.Helper()
		rx.AddAndPublish(virtiotest.Buf{Addr: buf, Len: 4096, Write: true})
		h.Notify(RxQueue)
		_, n, ok := rx.WaitUsed(waitTime)
		if !ok {
			t.Fatalf("no input delivered (want %q)", want)
		}
		got := make([]byte, n)
		_ = h.Mem.Read(buf, got)
		if string(got) != want {
			t.Fatalf("received %q, want %q", got, want)
		}
	}
	read("early ")
	// A buffer posted first, input later.
	rx.AddAndPublish(virtiotest.Buf{Addr: buf, Len: 3, Write: true})
	h.Notify(RxQueue)
	time.Sleep(time.Millisecond)
	d.Enqueue([]byte("abcdef"))
	if _, n, ok := rx.WaitUsed(waitTime); !ok || n != 3 {
		t.Fatalf("used %d ok %v", n, ok)
	}
	read("def")
	// The input buffer is bounded.
	if n := d.Enqueue(make([]byte, 2*InputBufferSize)); n != InputBufferSize {
		t.Fatalf("accepted %d of %d", n, 2*InputBufferSize)
	}
	if n := d.Enqueue([]byte("x")); n != 0 {
		t.Fatalf("accepted %d bytes into a full buffer", n)
	}
	read(string(make([]byte, InputBufferSize)))
	if m := d.Metrics(); m.RxBytes != 6+6+InputBufferSize {
		t.Errorf("metrics %+v", m)
	}
}

// TestResetKeepsInput: input survives a driver reset and the device comes
// back, with no goroutine left behind.
func TestResetKeepsInput(t *testing.T) {
	d, out, h := newConsole(t)
	before := runtime.NumGoroutine()
	for i := range 10 {
		qs := h.Init(feat(), 16, 16)
		a := h.Alloc(8, 8)
		_ = h.Mem.Write(a, []byte("tx"))
		qs[TxQueue].Submit(waitTime, virtiotest.Buf{Addr: a, Len: 2})
		if i == 9 {
			d.Enqueue([]byte("kept"))
		}
		h.SetStatus(0)
	}
	if !out.waitFor(strings.Repeat("tx", 10)) {
		t.Fatalf("output %q", out.String())
	}
	qs := h.Init(feat(), 16, 16)
	buf := h.Alloc(16, 8)
	if n, ok := qs[RxQueue].Submit(waitTime, virtiotest.Buf{Addr: buf, Len: 16, Write: true}); !ok || n != 4 {
		t.Fatalf("after reset: %d %v", n, ok)
	}
	h.SetStatus(0)
	for end := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > before && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("goroutines %d before, %d after", before, after)
	}
}

func TestConcurrentInputAndOutput(t *testing.T) {
	d, out, h := newConsole(t)
	qs := h.Init(feat(), 16, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; {
			if d.Enqueue([]byte("i")) == 1 {
				i++
			}
		}
	}()
	got := 0
	buf := h.Alloc(64, 8)
	tx := h.Alloc(8, 8)
	_ = h.Mem.Write(tx, []byte("o"))
	for got < 200 {
		qs[TxQueue].Submit(waitTime, virtiotest.Buf{Addr: tx, Len: 1})
		n, ok := qs[RxQueue].Submit(waitTime, virtiotest.Buf{Addr: buf, Len: 64, Write: true})
		if !ok {
			t.Fatal("receive")
		}
		got += int(n)
	}
	wg.Wait()
	if !out.waitFor("o") {
		t.Fatal("no output")
	}
}
