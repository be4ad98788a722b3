package bench

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// fakeEnv is an Env with no binaries: runBenchmark only needs the config,
// QEMU's availability and the benchmark's own functions.
func fakeEnv(rounds int, qemu bool) *Env {
	e := &Env{cfg: Config{Root: "/repo", Rounds: rounds}}
	if qemu {
		e.qemu = "/usr/bin/qemu-system-x86_64"
	} else {
		e.qemuNote = "qemu-system-x86_64 not found"
	}
	return e
}

func TestRunBenchmarkAlternatesAndSummarizes(t *testing.T) {
	var order []Trial
	b := Benchmark{
		Name: "fake", Title: "fake",
		Metrics: []Metric{{Title: "time", Unit: "ms"}, {Title: "other", Unit: "ms", NotApplicable: map[System]string{Floor: "none"}}},
		Commands: func(e *Env, s System) [][]string {
			return [][]string{{"/repo/bin/" + string(s), "/elsewhere/x"}}
		},
		Measure: func(_ context.Context, _ *Env, t Trial) ([]float64, error) {
			order = append(order, t)
			base := map[System]float64{KVMM: 10, QEMU: 50, Floor: 5}[t.System]
			other := 1.0
			if t.System == Floor {
				other = notAvailable()
			}
			return []float64{base + float64(t.Round), other}, nil
		},
	}
	br, err := fakeEnv(3, true).runBenchmark(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	want := []Trial{
		{-1, KVMM}, {-1, QEMU}, {-1, Floor}, // warm-up, discarded
		{0, KVMM}, {0, QEMU}, {0, Floor},
		{1, QEMU}, {1, Floor}, {1, KVMM},
		{2, Floor}, {2, KVMM}, {2, QEMU},
	}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("trial order %v\nwant        %v", order, want)
	}
	if len(br.Rows) != 2 {
		t.Fatalf("%d rows", len(br.Rows))
	}
	k := br.Rows[0].Cells[KVMM].Summary
	if k == nil || k.N != 3 || k.Median != 11 || k.Min != 10 || k.Max != 12 {
		t.Errorf("kvmm summary %+v", k)
	}
	if c := br.Rows[1].Cells[Floor]; c.Summary != nil || !strings.HasPrefix(c.Note, "n/a: ") {
		t.Errorf("not-applicable cell %+v", c)
	}
	if len(br.Commands) != 3 || br.Commands[0].Argv[0] != "bin/kvmm" || br.Commands[0].Argv[1] != "/elsewhere/x" {
		t.Errorf("commands %+v", br.Commands)
	}
}

func TestRunBenchmarkPendingMissingAndFailing(t *testing.T) {
	calls := map[System]int{}
	b := Benchmark{
		Name: "fake", Title: "fake",
		Metrics:  []Metric{{Title: "time", Unit: "ms"}},
		Pending:  map[System]string{KVMM: "no device yet"},
		Commands: func(e *Env, s System) [][]string { return nil },
		Measure: func(_ context.Context, _ *Env, t Trial) ([]float64, error) {
			calls[t.System]++
			if t.System == Floor && t.Round == 1 {
				return nil, errors.New("boom")
			}
			return []float64{1}, nil
		},
	}
	br, err := fakeEnv(4, false).runBenchmark(context.Background(), b)
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("error %v, want the floor's failure", err)
	}
	cells := br.Rows[0].Cells
	if c := cells[KVMM]; c.Note != "pending: no device yet" {
		t.Errorf("kvmm cell %+v", c)
	}
	if c := cells[QEMU]; !strings.HasPrefix(c.Note, "not installed: ") {
		t.Errorf("QEMU cell %+v", c)
	}
	if c := cells[Floor]; !strings.Contains(c.Note, "error: round 2: boom") {
		t.Errorf("floor cell %+v", c)
	}
	if calls[KVMM] != 0 || calls[QEMU] != 0 {
		t.Errorf("pending or missing systems were measured: %v", calls)
	}
	if calls[Floor] != 3 { // warm-up, round 1, failing round 2; then dropped
		t.Errorf("floor measured %d times, want 3", calls[Floor])
	}
}

func TestRunBenchmarkSkipped(t *testing.T) {
	b := Benchmark{
		Name: "fake", Title: "fake",
		Skip:     func(context.Context, *Env) string { return "no stock kernel" },
		Commands: func(e *Env, s System) [][]string { return [][]string{{"/repo/bin/" + string(s)}} },
		Measure: func(context.Context, *Env, Trial) ([]float64, error) {
			t.Error("a skipped benchmark was measured")
			return nil, nil
		},
	}
	br, err := fakeEnv(2, true).runBenchmark(context.Background(), b)
	if err != nil || br.Skipped != "no stock kernel" || len(br.Rows) != 0 {
		t.Errorf("skipped benchmark: %+v, %v", br, err)
	}
	if len(br.Commands) != 3 || br.Commands[0].Argv[0] != "bin/kvmm" {
		t.Errorf("a skipped benchmark lists what it would run: %+v", br.Commands)
	}
}

func TestBenchmarksTable(t *testing.T) {
	seen := map[string]bool{}
	for _, b := range Benchmarks() {
		if b.Name == "" || seen[b.Name] {
			t.Errorf("benchmark name %q empty or repeated", b.Name)
		}
		seen[b.Name] = true
		if b.Title == "" || b.Method == "" || len(b.Metrics) == 0 || b.Measure == nil || b.Commands == nil {
			t.Errorf("benchmark %s is incomplete", b.Name)
		}
	}
	for _, want := range []string{"startup", "exit-pio", "exit-mmio", "exit-ioeventfd", "memory", "boot-debian"} {
		if !seen[want] {
			t.Errorf("benchmark %s missing", want)
		}
	}
}

func TestCommandsOfEachSystem(t *testing.T) {
	e := fakeEnv(1, true)
	e.cfg.KVMM, e.cfg.Floor, e.cfg.ExitN = "/repo/bin/kvmm", "/repo/bin/kvmm-floor", 200
	e.guests = map[string]string{guestHello: "/repo/build/bench/hello.elf", guestExitLoop: "/repo/build/bench/exitloop.elf"}
	want := map[System]string{
		KVMM: `bin/kvmm run --kernel build/bench/hello.elf --mem 128M --cmdline ""`,
		QEMU: "/usr/bin/qemu-system-x86_64 -accel kvm -M microvm -m 128M -smp 1 -nodefaults -no-user-config -no-reboot " +
			"-display none -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel build/bench/hello.elf",
		Floor: `bin/kvmm-floor -kernel build/bench/hello.elf -mem 128M -cmdline ""`,
	}
	for s, w := range want {
		if got := CommandLine(e.display(e.guestArgv(s, e.Guest(guestHello), ""))); got != w {
			t.Errorf("%s: %s\nwant %s", s, got, w)
		}
	}
	got := CommandLine(e.display(e.exitArgv(Floor, "pio", 400, []string{"-ioeventfd-port", "128"})))
	if w := "bin/kvmm-floor -kernel build/bench/exitloop.elf -mem 128M -cmdline 'exitloop.mode=pio exitloop.n=400' -ioeventfd-port 128"; got != w {
		t.Errorf("exit floor: %s\nwant %s", got, w)
	}
	got = CommandLine(e.display(e.exitArgv(QEMU, "mmio", 200, nil)))
	if !strings.HasSuffix(got, "-kernel build/bench/exitloop.elf -append 'exitloop.mode=mmio exitloop.n=200'") {
		t.Errorf("exit QEMU: %s", got)
	}
}
