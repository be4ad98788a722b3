package bench

import "testing"

const goBenchOut = `goos: linux
goarch: amd64
pkg: github.com/kvmm/kvmm/devices
cpu: Intel(R) Xeon(R) Processor
BenchmarkBusWrite-2           	32797645	        32.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkBusWrite-2           	32797645	        30.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkBusWrite-2           	32797645	        34.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkBus-Miss-2           	52513285	        23.25 ns/op
PASS
ok  	github.com/kvmm/kvmm/devices	4.731s
pkg: github.com/kvmm/kvmm/vmm
BenchmarkPIOExitPOST-2        	28981020	        40.74 ns/op	       8 B/op	       1 allocs/op
PASS
`

func TestParseGoBench(t *testing.T) {
	got, err := ParseGoBench(goBenchOut)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d results: %+v", len(got), got)
	}
	w := got[0]
	if w.Package != "github.com/kvmm/kvmm/devices" || w.Name != "BenchmarkBusWrite" || w.NsPerOp.N != 3 ||
		w.NsPerOp.Median != 32 || w.NsPerOp.Min != 30 || w.NsPerOp.Max != 34 || w.AllocsPerOp != 0 {
		t.Errorf("BusWrite = %+v", w)
	}
	if got[1].Name != "BenchmarkBus-Miss" || got[1].AllocsPerOp != -1 {
		t.Errorf("dash in the name or no -benchmem: %+v", got[1])
	}
	if got[2].Package != "github.com/kvmm/kvmm/vmm" || got[2].AllocsPerOp != 1 {
		t.Errorf("second package: %+v", got[2])
	}
}

func TestParseGoBenchBadNumber(t *testing.T) {
	if _, err := ParseGoBench("BenchmarkX-2 100 fast ns/op\n"); err == nil {
		t.Error("no error for a bad figure")
	}
}

// TestParseGoBenchFailedRun: a run that ended in b.Fatal is counted, not a
// parse error, and the other runs still make the figure.
func TestParseGoBenchFailedRun(t *testing.T) {
	out := "pkg: github.com/kvmm/kvmm/devices/virtio/net\n" +
		"BenchmarkRx/frame=1514-2   \t  474591\t      2480 ns/op\t 1 allocs/op\n" +
		"BenchmarkRx/frame=1514-2   \t--- FAIL: BenchmarkRx/frame=1514-2\n" +
		"    bench_test.go:246: waiting for the interrupt: read irq: i/o timeout\n" +
		"BenchmarkRx/frame=1514-2   \t  444136\t      2338 ns/op\t 1 allocs/op\n" +
		"BenchmarkTx-2   \t--- FAIL: BenchmarkTx-2\n"
	got, err := ParseGoBench(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Failed != 1 || got[0].NsPerOp.N != 2 || got[1].Failed != 1 || got[1].NsPerOp.N != 0 {
		t.Fatalf("got %+v", got)
	}
}
