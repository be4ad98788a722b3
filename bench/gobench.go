package bench

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// GoBenchResult is one testing.B benchmark's figures over -count runs.
type GoBenchResult struct {
	Package string
	Name    string // without the -GOMAXPROCS suffix
	NsPerOp Summary
	// AllocsPerOp is from the last run (-benchmem); -1 when not reported.
	AllocsPerOp float64
	// Failed counts the runs that ended in "--- FAIL" (b.Fatal): the
	// figures are from the other runs, and the report says so.
	Failed int
}

// goBenchCount is how many times go test runs each micro-benchmark.
const goBenchCount = 5

// ParseGoBench reads `go test -bench -benchmem` output (several runs of a
// benchmark with -count) and summarizes ns/op per benchmark, in order of
// first appearance. Packages come from the "pkg:" lines.
func ParseGoBench(out string) ([]GoBenchResult, error) {
	type acc struct {
		pkg, name string
		ns        []float64
		allocs    float64
		failed    int
	}
	var order []string
	byKey := map[string]*acc{}
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		f := strings.Fields(line)
		failed := len(f) >= 3 && f[1] == "---" && f[2] == "FAIL:"
		if (len(f) < 4 && !failed) || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		key := pkg + "." + name
		a := byKey[key]
		if a == nil {
			a = &acc{pkg: pkg, name: name, allocs: -1}
			byKey[key] = a
			order = append(order, key)
		}
		if failed {
			a.failed++
			continue
		}
		// Fields after the iteration count come in value-unit pairs.
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("go test -bench line %q: %w", line, err)
			}
			switch f[i+1] {
			case "ns/op":
				a.ns = append(a.ns, v)
			case "allocs/op":
				a.allocs = v
			}
		}
	}
	res := make([]GoBenchResult, 0, len(order))
	for _, k := range order {
		a := byKey[k]
		var s Summary
		if len(a.ns) > 0 || a.failed == 0 {
			var err error
			if s, err = Summarize(a.ns); err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
		}
		res = append(res, GoBenchResult{Package: a.pkg, Name: a.name, NsPerOp: s, AllocsPerOp: a.allocs, Failed: a.failed})
	}
	return res, nil
}

// goBenchArgv is the go test command for the hot-path micro-benchmarks.
func goBenchArgv(goCmd string, pkgs []string) []string {
	return append([]string{goCmd, "test", "-run", "^$", "-bench", ".", "-benchmem",
		"-count", strconv.Itoa(goBenchCount)}, pkgs...)
}

// runGoBench runs the micro-benchmarks of pkgs in root.
func runGoBench(ctx context.Context, root, goCmd string, pkgs []string) ([]GoBenchResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	argv := goBenchArgv(goCmd, pkgs)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", CommandLine(argv), err, tail(string(out), 500))
	}
	return ParseGoBench(string(out))
}
