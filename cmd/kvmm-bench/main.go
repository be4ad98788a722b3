// Command kvmm-bench runs kvmm's benchmarks against QEMU (-M microvm, KVM)
// and the bare-KVM floor (kvmm-floor), prints the table and, with -out,
// rewrites the generated part of BENCHMARKS.md. `make bench` builds the
// binaries and runs it; see package bench.
//
// Usage:
//
//	kvmm-bench [-kvmm bin/kvmm] [-floor bin/kvmm-floor] [-rounds 10]
//	           [-exit-n 20000] [-only startup,memory] [-out BENCHMARKS.md]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kvmm/kvmm/bench"
	"github.com/kvmm/kvmm/internal/guesttest"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvmm-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := bench.Config{Progress: stderr}
	var only, out string
	fs.StringVar(&cfg.KVMM, "kvmm", "bin/kvmm", "kvmm binary under test")
	fs.StringVar(&cfg.Floor, "floor", "bin/kvmm-floor", "floor binary (cmd/kvmm-floor)")
	fs.StringVar(&cfg.QEMU, "qemu", "", "QEMU binary (default: qemu-system-x86_64 on PATH, installed with apt-get when missing)")
	fs.BoolVar(&cfg.InstallQEMU, "install-qemu", true, "apt-get install qemu-system-x86 when QEMU is missing (as root)")
	fs.IntVar(&cfg.Rounds, "rounds", 10, "measured runs per system and benchmark (after one warm-up run)")
	fs.IntVar(&cfg.ExitN, "exit-n", 20000, "writes per exit round-trip run (the runs do N and 2N; a multiple of 100)")
	fs.StringVar(&only, "only", "", "comma-separated benchmark names to run (default: all; see -list)")
	fs.StringVar(&cfg.GoCmd, "go", "go", "go command for the hot-path micro-benchmarks (\"\" skips them)")
	goPkgs := fs.String("gobench-pkgs", strings.Join(bench.DefaultGoBenchPkgs(), ","), "comma-separated packages whose testing.B benchmarks are run")
	fs.StringVar(&out, "out", "", "rewrite the generated part of this Markdown file (BENCHMARKS.md)")
	list := fs.Bool("list", false, "list the benchmarks and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "kvmm-bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *list {
		for _, b := range bench.Benchmarks() {
			fmt.Fprintf(stdout, "%-15s %s\n", b.Name, b.Title)
		}
		fmt.Fprintf(stdout, "%-15s %s\n", bench.GoBenchName, "hot-path micro-benchmarks (go test -bench)")
		return 0
	}
	if *goPkgs != "" {
		cfg.GoBenchPkgs = strings.Split(*goPkgs, ",")
	}
	if only != "" {
		cfg.Only = strings.Split(only, ",")
		if err := checkNames(cfg.Only); err != nil {
			fmt.Fprintf(stderr, "kvmm-bench: %v\n", err)
			return 2
		}
	}
	root, err := guesttest.Root()
	if err != nil {
		fmt.Fprintf(stderr, "kvmm-bench: %v\n", err)
		return 1
	}
	cfg.Root = root
	cfg.Invocation = invocation(args)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, runErr := bench.Run(ctx, cfg, bench.Benchmarks())
	if rep == nil {
		fmt.Fprintf(stderr, "kvmm-bench: %v\n", runErr)
		return 1
	}
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, rep.String())
	if out != "" {
		if err := writeReport(out, rep); err != nil {
			fmt.Fprintf(stderr, "kvmm-bench: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "\nwrote %s\n", out)
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "kvmm-bench: some measurements failed:\n%v\n", runErr)
		return 1
	}
	return 0
}

// invocation is how the report names the command that produced it.
func invocation(args []string) string {
	line := bench.CommandLine(append([]string{"kvmm-bench"}, args...))
	if os.Getenv("MAKELEVEL") != "" {
		return "make bench` → `" + line
	}
	return line
}

func checkNames(names []string) error {
	known := map[string]bool{bench.GoBenchName: true}
	for _, b := range bench.Benchmarks() {
		known[b.Name] = true
	}
	for _, n := range names {
		if !known[n] {
			return fmt.Errorf("unknown benchmark %q (see -list)", n)
		}
	}
	return nil
}

// writeReport replaces the generated part of path, keeping the rest.
func writeReport(path string, rep *bench.Report) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	doc := bench.ReplaceGenerated(string(old), rep.Markdown())
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
