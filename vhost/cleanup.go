package vhost

import (
	"errors"
	"fmt"
	"sync"
)

// Cleanup is a VM's registry of host changes to undo when kvmm exits: links
// it created (macvtap, auto taps), bridge attachments it made, vhost
// instances. There is one per VM, never a global: two VMs in one test binary
// must not undo each other's work.
//
// The VMM must call Run on every way out: a normal return, a failed start
// (so a half-built VM leaves nothing behind), a guest crash or triple fault,
// and its SIGTERM/SIGINT path, i.e. the goroutine that receives from
// signal.Notify's channel must call Run before the process exits. Go runs no
// code on SIGKILL; against that, auto taps are created non-persistent so the
// kernel deletes them when the process's fds close, but a macvtap link and a
// bridge attachment of an existing tap survive a SIGKILL.
//
// The zero value is ready to use. All methods are safe for concurrent use,
// which the signal path needs: Run may race with a start-up still adding.
type Cleanup struct {
	mu   sync.Mutex
	fns  []func() error
	ran  bool
	late []error // errors of functions added after Run, for the next Run
}

// Add registers f. Functions run in reverse order of registration, so a
// thing is undone before what it was built on (a vhost backend before its
// tap, a tap before the bridge it joined). If Run has already happened, f
// runs at once: whatever a late start-up step created must not outlive the
// VM; its error is returned by the next Run.
func (c *Cleanup) Add(f func() error) {
	c.mu.Lock()
	if !c.ran {
		c.fns = append(c.fns, f)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	if err := safeCall(f); err != nil {
		c.mu.Lock()
		c.late = append(c.late, err)
		c.mu.Unlock()
	}
}

// Run calls every registered function once, newest first, and returns their
// errors joined. A failing or panicking function does not stop the others.
// Later calls run nothing new except functions added after the first Run,
// which have already been run by Add; they report those functions' errors.
func (c *Cleanup) Run() error {
	c.mu.Lock()
	fns := c.fns
	c.fns = nil
	c.ran = true
	errs := c.late
	c.late = nil
	c.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		if err := safeCall(fns[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// safeCall runs f and turns a panic into an error, so one broken clean-up
// cannot leave the rest of the host changes in place.
func safeCall(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("clean-up panicked: %v", r)
		}
	}()
	return f()
}
