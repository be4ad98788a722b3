package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kvmm/kvmm/internal/guesttest"
)

// Config says what to run and where.
type Config struct {
	// Root is the repository root; paths in the report are relative to it.
	Root string
	// KVMM and Floor are the binaries under test (bin/kvmm, bin/kvmm-floor).
	KVMM, Floor string
	// QEMU is qemu-system-x86_64; "" looks it up on PATH.
	QEMU string
	// InstallQEMU installs Debian's qemu-system-x86 with apt-get when QEMU
	// is missing and the runner is root.
	InstallQEMU bool
	// WorkDir receives the built test guests (default Root/build/bench).
	WorkDir string
	// GuestDir holds the Debian guest of `make guest` (default
	// Root/build/guest).
	GuestDir string
	// Rounds is the number of measured runs of each system per benchmark
	// (after one warm-up run each).
	Rounds int
	// ExitN is the exit round-trip benchmark's N (a multiple of 100).
	ExitN int
	// Only, when not empty, names the benchmarks to run (GoBenchName for
	// the micro-benchmarks).
	Only []string
	// GoCmd is the go command that runs the hot-path micro-benchmarks
	// (testing.B) of GoBenchPkgs; "" skips them.
	GoCmd       string
	GoBenchPkgs []string
	// Progress receives a line per measurement; nil discards them.
	Progress io.Writer
	// Invocation is the command line recorded in the report.
	Invocation string
}

// GoBenchName selects the hot-path micro-benchmarks in Config.Only.
const GoBenchName = "gobench"

// DefaultGoBenchPkgs are the packages whose testing.B benchmarks make the
// micro-benchmark rows: the exit hot path (bus dispatch, the VM's exit
// handlers), the S3 round trip (vmm), balloon reclaim (balloon and
// virtio-balloon), the virtio-blk and virtio-net device paths and raw tap
// I/O (vhost).
func DefaultGoBenchPkgs() []string {
	return []string{"./devices/", "./vmm/", "./balloon/", "./devices/virtio/blk/",
		"./devices/virtio/net/", "./devices/virtio/balloon/", "./vhost/"}
}

// Env is what benchmarks see of the run: resolved binaries and built guests.
type Env struct {
	cfg      Config
	qemu     string // "" when unavailable
	qemuNote string // why QEMU is unavailable
	guests   map[string]string
	probed   bool
	probe    string // why a stock kernel cannot boot here ("" when it can)
}

// Guest ELFs the benchmarks run (testdata/guests).
const (
	guestHello    = "hello"
	guestExitLoop = "exitloop"
	guestIdle     = "idle"
	guestProbe    = "probe"
)

// newEnv checks the binaries and KVM, installs QEMU when asked, and builds
// the test guests.
func newEnv(ctx context.Context, cfg Config) (*Env, error) {
	if cfg.Rounds < 1 {
		return nil, fmt.Errorf("rounds %d: need at least 1", cfg.Rounds)
	}
	if cfg.ExitN <= 0 || cfg.ExitN%100 != 0 {
		return nil, fmt.Errorf("exit N %d: must be a positive multiple of 100", cfg.ExitN)
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = filepath.Join(cfg.Root, "build", "bench")
	}
	if cfg.GuestDir == "" {
		cfg.GuestDir = filepath.Join(cfg.Root, "build", "guest")
	}
	for _, p := range []*string{&cfg.KVMM, &cfg.Floor} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("binary %s: %w", *p, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("binary under test: %w (run `make bench`, which builds it)", err)
		}
		*p = abs
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("benchmarks need /dev/kvm: %w", err)
	}
	f.Close()
	e := &Env{cfg: cfg, guests: map[string]string{}}
	e.qemu, e.qemuNote = ensureQEMU(ctx, cfg)
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("guest build directory: %w", err)
	}
	for _, g := range []string{guestHello, guestExitLoop, guestIdle, guestProbe} {
		path, err := guesttest.Build(cfg.WorkDir, g)
		if err != nil {
			return nil, fmt.Errorf("building test guest %s: %w", g, err)
		}
		e.guests[g] = path
	}
	return e, nil
}

// ensureQEMU finds qemu-system-x86_64, installing Debian's package when it
// is missing, allowed and possible. It returns the path, or "" and why.
func ensureQEMU(ctx context.Context, cfg Config) (path, note string) {
	name := cfg.QEMU
	if name == "" {
		name = guesttest.QEMUBinary
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, ""
	}
	if !cfg.InstallQEMU || cfg.QEMU != "" {
		return "", name + " not found"
	}
	if os.Geteuid() != 0 {
		return "", name + " not found and not root: apt-get install -y qemu-system-x86"
	}
	logf(cfg.Progress, "qemu-system-x86_64 not on PATH: apt-get install -y qemu-system-x86\n")
	for _, argv := range [][]string{{"apt-get", "update"}, {"apt-get", "install", "-y", "qemu-system-x86"}} {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Sprintf("%s failed: %v: %s", strings.Join(argv, " "), err, tail(string(out), 200))
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, ""
	}
	return "", name + " still not found after apt-get install qemu-system-x86"
}

func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format, args...)
	}
}

// Guest is the path of a built test guest.
func (e *Env) Guest(name string) string { return e.guests[name] }

// rel shows a path relative to the repository root when it is inside it.
func (e *Env) rel(p string) string {
	if r, err := filepath.Rel(e.cfg.Root, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

// display makes argv readable: paths inside the repository become relative.
func (e *Env) display(argv []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = a
		if filepath.IsAbs(a) {
			out[i] = e.rel(a)
		}
	}
	return out
}

// Run runs the benchmarks and returns the report. Failed measurements are
// reported in their cells and joined into the error; the report is complete
// either way (nil only when the set-up failed).
func Run(ctx context.Context, cfg Config, benchmarks []Benchmark) (*Report, error) {
	start := time.Now()
	env, err := newEnv(ctx, cfg)
	if err != nil {
		return nil, err
	}
	rep := &Report{
		Machine:    probeMachine(ctx, env.qemu),
		Systems:    Systems(),
		Rounds:     cfg.Rounds,
		Invocation: cfg.Invocation,
	}
	if env.qemu == "" {
		rep.Machine.QEMU = env.qemuNote
	}
	var errs []error
	for _, b := range benchmarks {
		if len(cfg.Only) > 0 && !slices.Contains(cfg.Only, b.Name) {
			continue
		}
		br, err := env.runBenchmark(ctx, b)
		rep.Benchmarks = append(rep.Benchmarks, br)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", b.Name, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	if cfg.GoCmd != "" && len(cfg.GoBenchPkgs) > 0 && (len(cfg.Only) == 0 || slices.Contains(cfg.Only, GoBenchName)) {
		logf(cfg.Progress, "%s: %s\n", GoBenchName, CommandLine(goBenchArgv(cfg.GoCmd, cfg.GoBenchPkgs)))
		rep.GoBenchCommand = goBenchArgv(filepath.Base(cfg.GoCmd), cfg.GoBenchPkgs)
		res, err := runGoBench(ctx, cfg.Root, cfg.GoCmd, cfg.GoBenchPkgs)
		if err != nil {
			rep.GoBenchError = err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", GoBenchName, err))
		}
		rep.GoBench = res
	}
	rep.Machine.LoadAfter = loadAverage()
	rep.Duration = time.Since(start)
	return rep, errors.Join(errs...)
}

// runBenchmark measures one benchmark on every system it can.
func (e *Env) runBenchmark(ctx context.Context, b Benchmark) (BenchmarkResult, error) {
	br := BenchmarkResult{Name: b.Name, Title: b.Title, Method: b.Method}
	notes := map[System]string{}
	var systems []System
	for _, s := range Systems() {
		switch {
		case b.Pending[s] != "":
			notes[s] = "pending: " + b.Pending[s]
		case s == QEMU && e.qemu == "":
			notes[s] = "not installed: " + e.qemuNote
		default:
			systems = append(systems, s)
			for _, argv := range b.Commands(e, s) {
				br.Commands = append(br.Commands, Command{System: s, Argv: e.display(argv)})
			}
		}
	}
	if b.Skip != nil {
		if reason := b.Skip(ctx, e); reason != "" {
			logf(e.cfg.Progress, "%s: skipped: %s\n", b.Name, reason)
			br.Skipped = reason
			return br, nil
		}
	}
	samples := map[System][][]float64{} // per system, per metric
	var errs []error
	fail := func(s System, err error) {
		notes[s] = "error: " + err.Error()
		errs = append(errs, fmt.Errorf("%s: %w", s, err))
		systems = slices.DeleteFunc(systems, func(x System) bool { return x == s })
	}
	// One warm-up run per system (page cache, binary loading), discarded.
	for _, s := range slices.Clone(systems) {
		if _, err := b.Measure(ctx, e, Trial{Round: -1, System: s}); err != nil {
			fail(s, fmt.Errorf("warm-up: %w", err))
		}
	}
	for _, t := range Schedule(systems, e.cfg.Rounds) {
		if ctx.Err() != nil {
			return br, ctx.Err()
		}
		if !slices.Contains(systems, t.System) {
			continue // failed earlier in this benchmark
		}
		vals, err := b.Measure(ctx, e, t)
		if err == nil && len(vals) != len(b.Metrics) {
			err = fmt.Errorf("measure returned %d values for %d metrics", len(vals), len(b.Metrics))
		}
		if err != nil {
			fail(t.System, fmt.Errorf("round %d: %w", t.Round+1, err))
			continue
		}
		if samples[t.System] == nil {
			samples[t.System] = make([][]float64, len(b.Metrics))
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			samples[t.System][i] = append(samples[t.System][i], v)
			parts[i] = FormatValue(v) + " " + b.Metrics[i].Unit
		}
		logf(e.cfg.Progress, "%-14s round %2d/%d  %-5s  %s\n", b.Name, t.Round+1, e.cfg.Rounds, t.System, strings.Join(parts, ", "))
	}
	for i, m := range b.Metrics {
		row := Row{Title: m.Title, Unit: m.Unit, Target: m.Target, NoRatios: m.NoRatios, Cells: map[System]Cell{}}
		for _, s := range Systems() {
			switch {
			case notes[s] != "":
				row.Cells[s] = Cell{Note: notes[s]}
			case m.NotApplicable[s] != "":
				row.Cells[s] = Cell{Note: "n/a: " + m.NotApplicable[s]}
			case samples[s] != nil:
				sum, err := Summarize(samples[s][i])
				if err != nil {
					row.Cells[s] = Cell{Note: "error: " + err.Error()}
					errs = append(errs, fmt.Errorf("%s, %s: %w", m.Title, s, err))
					continue
				}
				row.Cells[s] = Cell{Summary: &sum, Samples: samples[s][i]}
			}
		}
		br.Rows = append(br.Rows, row)
	}
	return br, errors.Join(errs...)
}

// ms converts a duration to milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// mib converts bytes to MiB.
func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// notAvailable marks a metric a system does not produce (NaN).
func notAvailable() float64 { return math.NaN() }
