package bench

import (
	"strings"
	"testing"
	"time"
)

func summary(vals ...float64) *Summary {
	s, err := Summarize(vals)
	if err != nil {
		panic(err)
	}
	return &s
}

func sampleReport() *Report {
	faster := &Target{Text: "kvmm ≥5× faster than QEMU", Check: func(r Row) (bool, bool) {
		v, ok := r.PairedRatio(QEMU, KVMM)
		return ok && v >= 5, ok
	}}
	return &Report{
		Machine: Machine{CPUModel: "Test CPU", CPUs: 2, MemTotal: 4 << 30, Kernel: "6.1.0-test",
			QEMU: "QEMU emulator version 7.2.0", Go: "go1.26", LoadBefore: "1.00", LoadAfter: "2.00",
			Date: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)},
		Systems:    Systems(),
		Rounds:     3,
		Invocation: "make bench",
		Duration:   42 * time.Second,
		Benchmarks: []BenchmarkResult{
			{
				Name: "startup", Title: "start-up", Method: "wall time",
				Rows: []Row{
					{Title: "start-up", Unit: "ms", Target: faster, Cells: map[System]Cell{
						KVMM:  {Summary: summary(10, 12, 11)},
						QEMU:  {Summary: summary(40, 44, 60)},
						Floor: {Summary: summary(5, 5.5, 6)},
					}},
					{Title: "first byte", Unit: "ms", Cells: map[System]Cell{
						KVMM:  {Summary: summary(3)},
						QEMU:  {Note: "not installed: qemu-system-x86_64 not found"},
						Floor: {Note: "n/a: the floor discards serial output"},
					}},
				},
				Commands: []Command{
					{System: KVMM, Argv: []string{"bin/kvmm", "run", "--cmdline", ""}},
					{System: Floor, Argv: []string{"bin/kvmm-floor", "-cmdline", "a b"}},
				},
			},
			{Name: "boot", Title: "Debian boot", Method: "to init", Skipped: "no stock kernel here"},
		},
		GoBenchCommand: []string{"go", "test", "-bench", "."},
		GoBench: []GoBenchResult{{Package: "github.com/kvmm/kvmm/devices", Name: "BenchmarkBusWrite",
			NsPerOp: *summary(30, 32, 34), AllocsPerOp: 0}},
	}
}

func TestTableRendering(t *testing.T) {
	got := sampleReport().String()
	want := `| benchmark | kvmm | QEMU microvm | floor | QEMU ÷ kvmm | kvmm ÷ floor | target | met |
|---|---:|---:|---:|---:|---:|---|---|
| start-up (ms) | 11.0 [10.0–12.0] | 44.0 [40.0–60.0] | 5.50 [5.00–6.00] | 4.00× | 2.00× | kvmm ≥5× faster than QEMU | **no** |
| first byte (ms) | 3.00 | not installed [1] | n/a [2] | – | – |  |  |
| Debian boot | skipped [3] | | | | | | |

1. first byte, QEMU microvm: not installed: qemu-system-x86_64 not found
2. first byte, floor: n/a: the floor discards serial output
3. Debian boot: skipped: no stock kernel here

### Hot paths (testing.B)

` + "`go test -bench .`" + ` — user-space cost of the exit path after KVM_RUN returns; median [min–max] of the runs.

| package | benchmark | ns/op | allocs/op |
|---|---|---:|---:|
| devices | BenchmarkBusWrite | 32.0 [30.0–34.0] | 0 |
`
	if got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestMarkdownHasEverything(t *testing.T) {
	md := sampleReport().Markdown()
	if !strings.HasPrefix(md, BeginMarker+"\n") || !strings.HasSuffix(md, EndMarker) {
		t.Errorf("markers missing:\n%s", md)
	}
	for _, want := range []string{
		"Measured 2026-01-02 03:04 UTC with `make bench`",
		"median [min–max] of 3 runs",
		"| CPU | Test CPU, 2 logical CPUs (hardware virtualization: no vmx/svm",
		"| memory | 4.0 GiB |",
		"| kernel | 6.1.0-test |",
		"| QEMU | QEMU emulator version 7.2.0 |",
		"| load average (1 min) | 1.00 at the start, 2.00 at the end |",
		"kvmm:  bin/kvmm run --cmdline \"\"\n",
		"floor: bin/kvmm-floor -cmdline 'a b'\n",
		"Skipped: no stock kernel here",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestVerdicts(t *testing.T) {
	rows := sampleReport().Benchmarks[0].Rows
	if v := rows[0].Verdict(); v != Missed {
		t.Errorf("4× against ≥5×: %v", v)
	}
	rows[0].Cells[KVMM] = Cell{Summary: summary(8)}
	if v := rows[0].Verdict(); v != Met {
		t.Errorf("5.5× against ≥5×: %v", v)
	}
	rows[0].Cells[QEMU] = Cell{Note: "not installed"}
	if v := rows[0].Verdict(); v != Unknown {
		t.Errorf("without QEMU: %v", v)
	}
	if v := rows[1].Verdict(); v != NoTarget {
		t.Errorf("no target: %v", v)
	}
}

func TestRatio(t *testing.T) {
	r := sampleReport().Benchmarks[0].Rows[0]
	if v, ok := r.Ratio(QEMU, KVMM); !ok || v != 4 {
		t.Errorf("QEMU/kvmm = %v, %v", v, ok)
	}
	r.NoRatios = true
	if _, ok := r.Ratio(QEMU, KVMM); ok {
		t.Error("ratio of a NoRatios row")
	}
	r = sampleReport().Benchmarks[0].Rows[1]
	if _, ok := r.Ratio(QEMU, KVMM); ok {
		t.Error("ratio with a missing figure")
	}
}

func TestRatioIsPairedByRound(t *testing.T) {
	// kvmm is twice as fast as QEMU in every round, but the machine slowed
	// down in round 2: the paired ratio sees 2×, the medians' ratio does not.
	r := Row{Cells: map[System]Cell{
		KVMM: {Summary: summary(10, 50, 11), Samples: []float64{10, 50, 11}},
		QEMU: {Summary: summary(20, 100, 22), Samples: []float64{20, 100, 22}},
	}}
	if v, ok := r.Ratio(QEMU, KVMM); !ok || v != 2 {
		t.Errorf("paired ratio = %v, %v; want 2", v, ok)
	}
	// A system that failed after two rounds pairs with the first two.
	r.Cells[QEMU] = Cell{Summary: summary(30, 150), Samples: []float64{30, 150}}
	if v, ok := r.Ratio(QEMU, KVMM); !ok || v != 3 {
		t.Errorf("paired ratio over a prefix = %v, %v; want 3", v, ok)
	}
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{1234.4: "1234", 100: "100", 45.67: "45.7", 9.876: "9.88", 0.04: "0.04", -12.5: "-12.5"} {
		if got := FormatValue(v); got != want {
			t.Errorf("FormatValue(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":                                 `""`,
		"bin/kvmm":                         "bin/kvmm",
		"isa-debug-exit,iobase=0xf4":       "isa-debug-exit,iobase=0xf4",
		"exitloop.mode=pio exitloop.n=100": "'exitloop.mode=pio exitloop.n=100'",
		"it's":                             `'it'\''s'`,
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
	if got := CommandLine([]string{"kvmm", "run", "--cmdline", ""}); got != `kvmm run --cmdline ""` {
		t.Errorf("CommandLine = %s", got)
	}
}

func TestReplaceGenerated(t *testing.T) {
	gen := BeginMarker + "\nnew table\n" + EndMarker
	doc := "# Benchmarks\n\nintro\n\n" + BeginMarker + "\nold table\n" + EndMarker + "\n\n## Analysis\n\nkept\n"
	want := "# Benchmarks\n\nintro\n\n" + gen + "\n\n## Analysis\n\nkept\n"
	if got := ReplaceGenerated(doc, gen); got != want {
		t.Errorf("replace:\n%s\nwant:\n%s", got, want)
	}
	if got := ReplaceGenerated("", gen); !strings.HasPrefix(got, "# kvmm benchmarks\n\n"+gen) {
		t.Errorf("empty doc: %q", got)
	}
	if got := ReplaceGenerated("# B\n\nnotes\n", gen); got != "# B\n\nnotes\n\n"+gen+"\n" {
		t.Errorf("doc without markers: %q", got)
	}
	// An end marker before the begin marker is not a generated part.
	odd := EndMarker + "\n" + BeginMarker + "\n"
	if got := ReplaceGenerated(odd, gen); !strings.HasPrefix(got, odd) {
		t.Errorf("misordered markers: %q", got)
	}
}
