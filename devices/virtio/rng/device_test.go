package rng

import (
	"bytes"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvmm/kvmm/devices/pci"
	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
)

const waitTime = 5 * time.Second

var quiet = slog.New(slog.DiscardHandler)

func TestIdentity(t *testing.T) {
	h := virtiotest.New(t, New(Config{Log: quiet}), virtiotest.Options{})
	if h.ConfigRead16(pci.RegDeviceID) != 0x1044 || h.ConfigRead32(pci.RegRevision)>>8 != 0x00FF00 {
		t.Errorf("device %#x class %#x", h.ConfigRead16(pci.RegDeviceID), h.ConfigRead32(pci.RegRevision)>>8)
	}
	if h.FindCap(pci.CapIDVendor, virtio.PCICapDeviceCfg) != 0 {
		t.Error("a device configuration capability for a device without configuration")
	}
}

func TestFillsWritableBuffers(t *testing.T) {
	d := New(Config{Log: quiet})
	h := virtiotest.New(t, d, virtiotest.Options{IOEventFDs: true})
	q := h.Init(virtio.FeatureVersion1|virtio.FeatureIndirectDesc, 64)[0]
	a, b := h.Alloc(64, 8), h.Alloc(1000, 8)
	var prev []byte
	for range 4 {
		n, ok := q.Submit(waitTime, virtiotest.Buf{Addr: a, Len: 64, Write: true}, virtiotest.Buf{Addr: b, Len: 1000, Write: true})
		if !ok || n != 1064 {
			t.Fatalf("used %d ok %v", n, ok)
		}
		got := make([]byte, 1064)
		_ = h.Mem.Read(a, got[:64])
		_ = h.Mem.Read(b, got[64:])
		if bytes.Count(got, []byte{0}) > 40 || bytes.Equal(got, prev) {
			t.Fatalf("not random: %x", got[:32])
		}
		prev = got
	}
	// A chain with only a readable buffer gets nothing.
	if n, ok := q.Submit(waitTime, virtiotest.Buf{Addr: a, Len: 8}); !ok || n != 0 {
		t.Fatalf("readable-only chain: %d %v", n, ok)
	}
	if m := d.Metrics(); m.Requests != 5 || m.Bytes != 4*1064 {
		t.Errorf("metrics %+v", m)
	}
}

// TestBoundedPerRequest: a huge request gets MaxBytesPerRequest bytes.
func TestBoundedPerRequest(t *testing.T) {
	var asked atomic.Uint64
	d := New(Config{Log: quiet, Source: func(b []byte) (int, error) {
		asked.Add(uint64(len(b)))
		for i := range b {
			b[i] = 0xA5
		}
		return len(b), nil
	}})
	h := virtiotest.New(t, d, virtiotest.Options{MemSize: 32 << 20})
	q := h.Init(virtio.FeatureVersion1, 64)[0]
	big := h.Alloc(8<<20, 4096)
	n, ok := q.Submit(waitTime, virtiotest.Buf{Addr: big, Len: 8 << 20, Write: true})
	if !ok || n != MaxBytesPerRequest || asked.Load() != MaxBytesPerRequest {
		t.Fatalf("used %d, asked the source for %d", n, asked.Load())
	}
	after, _ := h.Mem.ReadU32(big + MaxBytesPerRequest)
	if after != 0 {
		t.Error("wrote past the bound")
	}
}

func TestSourceFailure(t *testing.T) {
	calls := 0
	d := New(Config{Log: quiet, Source: func(b []byte) (int, error) {
		calls++
		if calls == 1 {
			return 10, nil // short read, then failure
		}
		return 0, errors.New("no entropy")
	}})
	h := virtiotest.New(t, d, virtiotest.Options{})
	q := h.Init(virtio.FeatureVersion1, 64)[0]
	if n, ok := q.Submit(waitTime, virtiotest.Buf{Addr: h.Alloc(64, 8), Len: 64, Write: true}); !ok || n != 10 {
		t.Fatalf("used %d ok %v", n, ok)
	}
	if d.Metrics().Errors != 1 || h.Status()&virtio.StatusNeedsReset != 0 {
		t.Errorf("metrics %+v status %#x", d.Metrics(), h.Status())
	}
}
