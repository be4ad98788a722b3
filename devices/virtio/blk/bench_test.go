package blk

import (
	"fmt"
	"testing"

	"github.com/kvmm/kvmm/devices/virtio"
	"github.com/kvmm/kvmm/devices/virtio/virtiotest"
)

// Benchmarks of the virtio-blk device path without KVM, on a tmpfs image:
// a request goes through the avail ring, the notification (a fake KVM
// signalling the queue's ioeventfd), the worker goroutine, the chain
// parser, the file and the used ring, and the driver polls the used ring.
// "direct" calls the request handler on a parsed chain, the device's own
// cost. req/s is requests per second of wall time.

const benchSectors = 64 << 11 // 64 MiB image

func benchDisk(b *testing.B) *disk {
	path := newImage(b, 0)
	if err := truncate(path, benchSectors*SectorSize); err != nil {
		b.Fatal(err)
	}
	return newDisk(b, openDisk(b, Config{Path: path}), features())
}

func BenchmarkRequest(b *testing.B) {
	for _, tc := range []struct {
		name  string
		typ   uint32
		size  uint32
		batch int
	}{
		{"read-4k", TypeIn, 4096, 1},
		{"write-4k", TypeOut, 4096, 1},
		{"read-64k", TypeIn, 65536, 1},
		{"read-4k-batch32", TypeIn, 4096, 32},
		{"write-4k-batch32", TypeOut, 4096, 32},
		{"flush", TypeFlush, 0, 1},
	} {
		b.Run(tc.name, func(b *testing.B) {
			d := benchDisk(b)
			hdrs := make([]uint64, tc.batch)
			sts := make([]uint64, tc.batch)
			bufs := make([]uint64, tc.batch)
			for i := range tc.batch {
				hdrs[i], sts[i], bufs[i] = d.h.Alloc(16, 16), d.h.Alloc(1, 1), d.h.Alloc(uint64(max(tc.size, 1)), 4096)
			}
			b.SetBytes(int64(tc.size))
			b.ResetTimer()
			for n := 0; n < b.N; n += tc.batch {
				for i := range tc.batch {
					sector := uint64((n+i)*int(tc.size/SectorSize)) % (benchSectors - 128)
					putHeader(d, hdrs[i], tc.typ, sector)
					chain := []virtiotest.Buf{{Addr: hdrs[i], Len: 16}}
					if tc.size > 0 {
						chain = append(chain, virtiotest.Buf{Addr: bufs[i], Len: tc.size, Write: tc.typ == TypeIn})
					}
					chain = append(chain, virtiotest.Buf{Addr: sts[i], Len: 1, Write: true})
					d.q.AddAndPublish(chain...)
				}
				d.h.Notify(0)
				for range tc.batch {
					if _, _, ok := d.q.WaitUsed(waitTime); !ok {
						b.Fatal("no completion")
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// BenchmarkHandle is the request handler alone (chain already parsed).
func BenchmarkHandle(b *testing.B) {
	for _, size := range []uint32{4096, 65536} {
		for _, typ := range []uint32{TypeIn, TypeOut} {
			name := fmt.Sprintf("read-%dk", size>>10)
			if typ == TypeOut {
				name = fmt.Sprintf("write-%dk", size>>10)
			}
			b.Run(name, func(b *testing.B) {
				d := benchDisk(b)
				hdr, st, buf := d.h.Alloc(16, 16), d.h.Alloc(1, 1), d.h.Alloc(uint64(size), 4096)
				c := virtio.Chain{Descs: []virtio.Desc{{Addr: hdr, Len: 16}, {Addr: buf, Len: size, Write: typ == TypeIn},
					{Addr: st, Len: 1, Write: true}}}
				if typ == TypeIn {
					c.ReadLen, c.WriteLen = 16, size+1
				} else {
					c.ReadLen, c.WriteLen = 16+size, 1
				}
				var iov [][]byte
				b.SetBytes(int64(size))
				b.ResetTimer()
				for i := range b.N {
					putHeader(d, hdr, typ, uint64(i*int(size/SectorSize))%(benchSectors-128))
					if _, err := d.dev.Handle(d.h.Mem, &c, &iov); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
			})
		}
	}
}

func putHeader(d *disk, at uint64, typ uint32, sector uint64) {
	_ = d.h.Mem.WriteU32(at, typ)
	_ = d.h.Mem.WriteU32(at+4, 0)
	_ = d.h.Mem.WriteU64(at+8, sector)
}
