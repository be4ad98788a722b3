package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvmm/kvmm/bench"
)

func TestCheckNames(t *testing.T) {
	if err := checkNames([]string{"startup", "exit-pio", bench.GoBenchName}); err != nil {
		t.Error(err)
	}
	if err := checkNames([]string{"startup", "nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown name: %v", err)
	}
}

func TestWriteReportKeepsTheHandWrittenParts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	old := "# Benchmarks\n\nintro\n\n" + bench.BeginMarker + "\nold\n" + bench.EndMarker + "\n\n## Analysis\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := &bench.Report{Systems: bench.Systems(), Rounds: 1, Invocation: "kvmm-bench"}
	if err := writeReport(path, rep); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if !strings.HasPrefix(got, "# Benchmarks\n\nintro\n\n"+bench.BeginMarker) || !strings.HasSuffix(got, bench.EndMarker+"\n\n## Analysis\n") ||
		strings.Contains(got, "\nold\n") {
		t.Errorf("report file:\n%s", got)
	}
}

func TestUsageErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-only", "nope"}, &out, &errOut); code != 2 {
		t.Errorf("unknown benchmark: exit %d", code)
	}
	if code := run([]string{"extra"}, &out, &errOut); code != 2 {
		t.Errorf("extra argument: exit %d", code)
	}
	out.Reset()
	if code := run([]string{"-list"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "startup") {
		t.Errorf("-list: exit %d, %q", code, out.String())
	}
}
