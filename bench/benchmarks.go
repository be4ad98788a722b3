package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kvmm/kvmm/internal/guesttest"
	"github.com/kvmm/kvmm/layout"
)

// Benchmark is one entry of the benchmark table: a workload, how one sample
// of it is measured under a system, and the rows (metrics) it reports.
type Benchmark struct {
	// Name is the short id (-only flag, progress lines).
	Name string
	// Title and Method describe it in the report.
	Title, Method string
	// Metrics are the rows: Measure returns one value per metric.
	Metrics []Metric
	// Pending maps a system that cannot be measured yet to the reason.
	Pending map[System]string
	// Skip, when set, returns why the benchmark cannot run on this host.
	Skip func(ctx context.Context, e *Env) string
	// Commands returns the command lines a sample runs under the system.
	Commands func(e *Env, s System) [][]string
	// Measure takes one sample under t.System (t.Round is -1 for the
	// warm-up run). A value is NaN where a metric is NotApplicable.
	Measure func(ctx context.Context, e *Env, t Trial) ([]float64, error)
}

// Metric is one row of a benchmark.
type Metric struct {
	Title  string
	Unit   string
	Target *Target
	// NotApplicable maps a system that has no such figure to why.
	NotApplicable map[System]string
	// NoRatios leaves the ratio columns empty (a figure that is context,
	// not a cost to compare).
	NoRatios bool
}

// Parameters of the workloads.
const (
	// guestMem is the test guests' RAM, as every system is told it.
	guestMem      = "128M"
	guestMemBytes = 128 * layout.MiB
	// debianMem is the Debian guest's RAM.
	debianMem      = "512M"
	debianMemBytes = 512 * layout.MiB
	debianCmdline  = "console=ttyS0 panic=-1 reboot=k"
	// initMarker is the first line the Debian guest's init prints
	// (scripts/guest-init.sh).
	initMarker = "KVMM-INIT-REACHED"
	// idleMarker is what testdata/guests/idle.S prints once booted; the
	// floor, which discards serial output, prints floorHaltedMarker when
	// the guest halts.
	idleMarker        = "idle: ready"
	floorHaltedMarker = "kvmm-floor: guest halted"
	// postPort is the port the exit loop writes (layout.POSTPort).
	postPort = layout.POSTPort

	runTimeout   = 2 * time.Minute
	bootTimeout  = 10 * time.Minute
	probeTimeout = time.Minute
	// memorySettle lets a booted guest's VMM finish whatever follows the
	// guest's last output (thread start-up, buffers) before RSS is read.
	memorySettle = 300 * time.Millisecond
)

// Benchmarks is the table of benchmarks `make bench` runs, in report order.
// A new benchmark (S3 round trip, balloon reclaim, virtio-blk/net
// throughput) is one more entry.
func Benchmarks() []Benchmark {
	exitTarget := &Target{
		Text: "kvmm within 10% of the floor and faster than QEMU",
		Check: func(r Row) (bool, bool) {
			toFloor, okF := r.PairedRatio(KVMM, Floor)
			qemuTo, okQ := r.PairedRatio(QEMU, KVMM)
			return okF && okQ && toFloor <= 1.10 && qemuTo > 1, okF && okQ
		},
	}
	return []Benchmark{
		{
			Name:  "startup",
			Title: "start-up (hello guest)",
			Method: "wall time of the whole process, from fork/exec to the reaping of its exit, booting testdata/guests/hello.S " +
				"(PVH ELF, 128 MiB, prints 4 lines, exits through isa-debug-exit 0xf4 with status 33); " +
				"the first serial byte's arrival on the stdout pipe marks the guest running",
			Metrics: []Metric{
				{Title: "start-up: process start to exit", Unit: "ms", Target: &Target{
					Text: "kvmm ≥5× faster than QEMU",
					Check: func(r Row) (bool, bool) {
						v, ok := r.PairedRatio(QEMU, KVMM)
						return ok && v >= 5, ok
					},
				}},
				{Title: "start-up: process start to first serial byte", Unit: "ms",
					NotApplicable: map[System]string{Floor: "the floor discards serial output"}},
			},
			Commands: func(e *Env, s System) [][]string {
				return [][]string{e.guestArgv(s, e.Guest(guestHello), "")}
			},
			Measure: func(ctx context.Context, e *Env, t Trial) ([]float64, error) {
				res, err := runTimed(ctx, e.guestArgv(t.System, e.Guest(guestHello), ""), runTimeout)
				if err != nil {
					return nil, err
				}
				if err := res.expectStatus(guesttest.PassStatus); err != nil {
					return nil, err
				}
				first := notAvailable()
				if t.System != Floor {
					if res.FirstOutput == 0 {
						return nil, fmt.Errorf("no serial output")
					}
					first = ms(res.FirstOutput)
				}
				return []float64{ms(res.Wall), first}, nil
			},
		},
		exitBenchmark("exit-pio", "pio", "exit round trip: port I/O write (OUT to 0x80)",
			"Each OUT to port 0x80 is a KVM_EXIT_IO answered in user space (kvmm: the POST device on its bus; "+
				"QEMU: its I/O address space; floor: ignored).", exitTarget, nil, nil),
		exitBenchmark("exit-mmio", "mmio", "exit round trip: MMIO write (unmapped 0xD0000000)",
			"Each write to 0xD0000000 (no RAM, no device) is a KVM_EXIT_MMIO answered in user space as unmapped.",
			exitTarget, nil, nil),
		exitBenchmark("exit-ioeventfd", "pio", "exit round trip: port I/O write to an ioeventfd (0x80)",
			"With an eventfd bound to port 0x80 (KVM_IOEVENTFD) KVM completes each OUT in the kernel, "+
				"without a return to user space: the cost of a doorbell write.", nil,
			[]string{"-ioeventfd-port", fmt.Sprint(postPort)},
			map[System]string{
				KVMM: "kvmm binds ioeventfds only to the queue-notify addresses of its virtio devices (devices/virtio), " +
					"which this exit-loop guest does not drive; the notify path's cost is in the virtio-blk Request rows below",
				QEMU: "QEMU binds ioeventfds only to the queue-notify registers of a virtio device whose driver has set it up; " +
					"the test guest drives no virtio device",
			}),
		{
			Name:  "memory",
			Title: "memory overhead (idle guest)",
			Method: "1 vCPU, 128 MiB: boot testdata/guests/idle.S (prints \"idle: ready\", then cli; hlt), wait " +
				memorySettle.String() + ", read /proc/PID/smaps of the VMM process: total Rss minus the Rss of the guest-RAM " +
				"mapping (the anonymous rw mapping of 128 MiB, up to 2 MiB more where the kernel merged a neighbour into it)",
			Metrics: memoryMetrics("", true),
			Commands: func(e *Env, s System) [][]string {
				return [][]string{e.guestArgv(s, e.Guest(guestIdle), "")}
			},
			Measure: func(ctx context.Context, e *Env, t Trial) ([]float64, error) {
				marker := idleMarker
				if t.System == Floor {
					marker = floorHaltedMarker
				}
				return measureMemory(ctx, e.guestArgv(t.System, e.Guest(guestIdle), ""), marker, guestMemBytes, runTimeout)
			},
		},
		{
			Name:  "memory-debian",
			Title: "memory overhead (Debian guest at init)",
			Method: "the memory benchmark's measurement for the Debian guest of `make guest` (512 MiB, 1 vCPU), " +
				"taken once its init printed " + initMarker,
			Metrics: memoryMetrics(" (Debian guest)", false),
			Pending: map[System]string{Floor: "the floor boots only the test guests"},
			Skip:    func(ctx context.Context, e *Env) string { return e.stockKernelReason(ctx) },
			Commands: func(e *Env, s System) [][]string {
				return [][]string{e.debianArgv(s)}
			},
			Measure: func(ctx context.Context, e *Env, t Trial) ([]float64, error) {
				return measureMemory(ctx, e.debianArgv(t.System), initMarker, debianMemBytes, bootTimeout)
			},
		},
		{
			Name:  "boot-debian",
			Title: "boot of the Debian guest to init",
			Method: "time from fork/exec to the line " + initMarker + " (the first thing scripts/guest-init.sh prints) " +
				"on the serial console, same kernel (build/guest/vmlinux, PVH), initramfs and command line",
			Metrics: []Metric{{Title: "boot: process start to " + initMarker, Unit: "ms"}},
			Pending: map[System]string{Floor: "the floor boots only the test guests"},
			Skip:    func(ctx context.Context, e *Env) string { return e.stockKernelReason(ctx) },
			Commands: func(e *Env, s System) [][]string {
				return [][]string{e.debianArgv(s)}
			},
			Measure: func(ctx context.Context, e *Env, t Trial) ([]float64, error) {
				p, err := startUntil(ctx, e.debianArgv(t.System), initMarker, bootTimeout)
				if err != nil {
					return nil, err
				}
				p.Stop()
				return []float64{ms(p.Ready)}, nil
			},
		},
	}
}

// exitBenchmark is an exit round-trip benchmark: exitloop.S in mode under
// every system, floorArgs added to the floor's command line; what says what
// one write costs there.
func exitBenchmark(name, mode, title, what string, target *Target, floorArgs []string, pending map[System]string) Benchmark {
	floorArgs = append([]string{"-serial"}, floorArgs...) // the markers come over COM1
	return Benchmark{
		Name:  name,
		Title: title,
		Method: "testdata/guests/exitloop.S does N writes (unrolled 100 to a loop iteration) between two lines on the " +
			"serial console; the runner timestamps the end of the first line and the start of the second as they arrive " +
			"on the VMM's stdout pipe and divides by N, so start-up, boot and shutdown are not in the figure. " + what +
			" On a host without hardware virtualization the guest's write instruction itself is emulated, the same under every system",
		Metrics: []Metric{{Title: title, Unit: "ns/exit", Target: target}},
		Pending: pending,
		Commands: func(e *Env, s System) [][]string {
			return [][]string{e.exitArgv(s, mode, e.cfg.ExitN, floorArgs)}
		},
		Measure: func(ctx context.Context, e *Env, t Trial) ([]float64, error) {
			n := e.cfg.ExitN
			res, err := runTimed(ctx, e.exitArgv(t.System, mode, n, floorArgs), runTimeout)
			if err != nil {
				return nil, err
			}
			if err := res.expectStatus(guesttest.PassStatus); err != nil {
				return nil, err
			}
			return exitCost(res.Lines, mode, n)
		},
	}
}

// exitCost is the time per exit from exitloop.S's timed lines: from the end
// of "exitloop: <mode> n=<n>" to the start of "exitloop: done", over n.
func exitCost(lines []TimedLine, mode string, n int) ([]float64, error) {
	begin, ok := findLine(lines, fmt.Sprintf("exitloop: %s n=%d", mode, n))
	if !ok {
		return nil, fmt.Errorf("no \"exitloop: %s n=%d\" line in the output", mode, n)
	}
	end, ok := findLine(lines, "exitloop: done")
	if !ok || end.Start < begin.End {
		return nil, fmt.Errorf("no \"exitloop: done\" line after the start line")
	}
	return []float64{float64(end.Start-begin.End) / float64(n)}, nil
}

// memoryMetrics are the rows of a memory benchmark (suffix tells them
// apart); withTarget adds the < 5 MiB target to the first.
func memoryMetrics(suffix string, withTarget bool) []Metric {
	var target *Target
	if withTarget {
		target = &Target{
			Text: "kvmm < 5 MiB",
			Check: func(r Row) (bool, bool) {
				k, ok := r.Medians()[KVMM]
				return ok && k < 5, ok
			},
		}
	}
	return []Metric{
		{Title: "memory: RSS beyond guest-touched RAM" + suffix, Unit: "MiB", Target: target},
		{Title: "… of which anonymous (heap, stacks, buffers)" + suffix, Unit: "MiB"},
		{Title: "… of which file-backed (binary, shared libraries)" + suffix, Unit: "MiB"},
		{Title: "guest RAM touched, not counted" + suffix, Unit: "MiB", NoRatios: true},
	}
}

// measureMemory starts argv, waits for marker and reads its memory use.
func measureMemory(ctx context.Context, argv []string, marker string, ram uint64, timeout time.Duration) ([]float64, error) {
	p, err := startUntil(ctx, argv, marker, timeout)
	if err != nil {
		return nil, err
	}
	defer p.Stop()
	select {
	case <-time.After(memorySettle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", p.PID()))
	if err != nil {
		return nil, fmt.Errorf("reading smaps: %w", err)
	}
	maps, err := ParseSmaps(data)
	if err != nil {
		return nil, err
	}
	u, err := SplitMemory(maps, ram)
	if err != nil {
		return nil, err
	}
	return []float64{mib(u.Overhead()), mib(u.AnonOverhead()), mib(u.FileBacked()), mib(u.GuestTouched)}, nil
}

// guestArgv is the command that boots a test guest under s. floorArgs are
// added to the floor's command line only.
func (e *Env) guestArgv(s System, elf, cmdline string, floorArgs ...string) []string {
	switch s {
	case KVMM:
		return []string{e.cfg.KVMM, "run", "--kernel", elf, "--mem", guestMem, "--cmdline", cmdline}
	case QEMU:
		var extra []string
		if cmdline != "" {
			extra = []string{"-append", cmdline}
		}
		// Same machine line as the guests' QEMU oracle: microvm, KVM only,
		// 128 MiB, isa-debug-exit at 0xf4, COM1 on stdout.
		return append([]string{e.qemu}, guesttest.QEMUArgs(elf, "microvm", 1, extra...)...)
	case Floor:
		return append([]string{e.cfg.Floor, "-kernel", elf, "-mem", guestMem, "-cmdline", cmdline}, floorArgs...)
	}
	panic("bench: unknown system " + string(s))
}

// exitArgv runs exitloop.S with n writes in mode.
func (e *Env) exitArgv(s System, mode string, n int, floorArgs []string) []string {
	return e.guestArgv(s, e.Guest(guestExitLoop), fmt.Sprintf("exitloop.mode=%s exitloop.n=%d", mode, n), floorArgs...)
}

// debianArgv boots the Debian guest of `make guest` under s.
func (e *Env) debianArgv(s System) []string {
	kernel := filepath.Join(e.cfg.GuestDir, "vmlinux")
	initrd := filepath.Join(e.cfg.GuestDir, "initramfs.cpio.gz")
	switch s {
	case KVMM:
		return []string{e.cfg.KVMM, "run", "--kernel", kernel, "--initrd", initrd, "--mem", debianMem, "--cpus", "1",
			"--cmdline", debianCmdline}
	case QEMU:
		return []string{e.qemu, "-accel", "kvm", "-M", "microvm", "-cpu", "host", "-m", debianMem, "-smp", "1",
			"-nodefaults", "-no-user-config", "-no-reboot", "-display", "none", "-serial", "stdio",
			"-kernel", kernel, "-initrd", initrd, "-append", debianCmdline}
	}
	return nil
}

// stockKernelReason says why this host cannot boot the Debian guest, or ""
// when it can. It boots the capability probe (testdata/guests/probe.S, the
// e2e tests' probe) under kvmm once: status 33 means capable.
func (e *Env) stockKernelReason(ctx context.Context) string {
	if e.probed {
		return e.probe
	}
	e.probed = true
	argv := []string{e.cfg.KVMM, "run", "--kernel", e.Guest(guestProbe), "--mem", "64M", "--cmdline", ""}
	res, err := runTimed(ctx, argv, probeTimeout)
	switch {
	case err != nil:
		e.probe = fmt.Sprintf("the capability probe did not run: %v", err)
	case res.Status != guesttest.PassStatus:
		last := "nothing"
		for _, l := range strings.Split(res.Stdout, "\n") {
			if strings.HasPrefix(l, "PROBE ") {
				last = strings.TrimSpace(l)
			}
		}
		reason := lastLine(res.Stderr)
		reason = strings.TrimPrefix(reason, "kvmm: ")
		reason, _, _ = strings.Cut(reason, "; bytes")
		if len(reason) > 200 {
			reason = reason[:200] + "…"
		}
		e.probe = fmt.Sprintf("this host's KVM cannot boot a stock kernel: `%s` stopped after %q with status %d (%s)",
			CommandLine(e.display(argv)), last, res.Status, reason)
	default:
		for _, f := range []string{"vmlinux", "initramfs.cpio.gz"} {
			if _, err := os.Stat(filepath.Join(e.cfg.GuestDir, f)); err != nil {
				e.probe = fmt.Sprintf("no Debian guest: %v (run `make guest`)", err)
				break
			}
		}
	}
	return e.probe
}

// lastLine is the last non-empty line of s, trimmed.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
