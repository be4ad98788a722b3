package bench

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLineRecorder(t *testing.T) {
	var w lineRecorder
	ms := time.Millisecond
	w.record([]byte("exit"), 1*ms)
	if got := w.firstByte(); got != 1*ms {
		t.Errorf("first byte at %v, want 1ms", got)
	}
	w.record([]byte("loop: pio n=100\r\n"), 2*ms)
	w.record([]byte("exitloop: done\nPASS"), 9*ms)
	w.record([]byte(" exitloop\n"), 10*ms)
	want := []TimedLine{
		{Text: "exitloop: pio n=100", Start: 1 * ms, End: 2 * ms},
		{Text: "exitloop: done", Start: 9 * ms, End: 9 * ms},
		{Text: "PASS exitloop", Start: 9 * ms, End: 10 * ms},
	}
	if !reflect.DeepEqual(w.lines, want) {
		t.Errorf("lines %+v\nwant  %+v", w.lines, want)
	}
	if got := w.firstByte(); got != 1*ms {
		t.Errorf("first byte at %v after more lines", got)
	}
}

func TestExitCost(t *testing.T) {
	lines := []TimedLine{
		{Text: "hello", Start: 0, End: time.Millisecond},
		{Text: "exitloop: mmio n=200", Start: time.Millisecond, End: 2 * time.Millisecond},
		{Text: "exitloop: done", Start: 3 * time.Millisecond, End: 4 * time.Millisecond},
	}
	got, err := exitCost(lines, "mmio", 200)
	if err != nil || len(got) != 1 || got[0] != 5000 {
		t.Errorf("exitCost = %v, %v; want 5000 ns", got, err)
	}
	if _, err := exitCost(lines, "pio", 200); err == nil {
		t.Error("wrong mode: no error")
	}
	if _, err := exitCost(lines[:2], "mmio", 200); err == nil || !strings.Contains(err.Error(), "done") {
		t.Errorf("no done line: %v", err)
	}
}
