package vhost

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestCleanupRunsNewestFirstOnce(t *testing.T) {
	var c Cleanup
	var order []int
	for i := 0; i < 3; i++ {
		c.Add(func() error { order = append(order, i); return nil })
	}
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	if len(order) != 3 || order[0] != 2 || order[1] != 1 || order[2] != 0 {
		t.Errorf("order %v, want [2 1 0]", order)
	}
	if err := c.Run(); err != nil || len(order) != 3 {
		t.Errorf("second Run: %v, order %v: must run nothing again", err, order)
	}
}

func TestCleanupErrorsAndPanicsDoNotStopOthers(t *testing.T) {
	var c Cleanup
	ran := 0
	c.Add(func() error { ran++; return nil })
	c.Add(func() error { panic("boom") })
	c.Add(func() error { ran++; return errors.New("first failure") })
	err := c.Run()
	if ran != 2 {
		t.Errorf("%d functions ran, want 2 besides the panicking one", ran)
	}
	if err == nil || !strings.Contains(err.Error(), "first failure") || !strings.Contains(err.Error(), "panicked: boom") {
		t.Errorf("Run: %v, want both the error and the panic reported", err)
	}
}

// Something created after the VM began to shut down (a start-up racing a
// SIGTERM) is undone at once, and its error reaches the next Run.
func TestCleanupAddAfterRun(t *testing.T) {
	var c Cleanup
	c.Run()
	ran := false
	c.Add(func() error { ran = true; return errors.New("late") })
	if !ran {
		t.Fatal("function added after Run did not run at once")
	}
	if err := c.Run(); err == nil || !strings.Contains(err.Error(), "late") {
		t.Errorf("next Run: %v, want the late error", err)
	}
	if err := c.Run(); err != nil {
		t.Errorf("third Run: %v, want nothing", err)
	}
}

// Run from a signal goroutine while start-up still adds: every function
// runs exactly once (go test -race checks the locking).
func TestCleanupConcurrent(t *testing.T) {
	var c Cleanup
	var mu sync.Mutex
	runs := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Add(func() error { mu.Lock(); runs[i]++; mu.Unlock(); return nil })
		}()
	}
	wg.Add(1)
	go func() { defer wg.Done(); c.Run() }()
	wg.Wait()
	c.Run()
	for i := 0; i < 100; i++ {
		if runs[i] != 1 {
			t.Errorf("function %d ran %d times", i, runs[i])
		}
	}
}
