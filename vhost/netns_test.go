package vhost

import (
	"errors"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// requireTun skips tests that need the real tun driver and the right to
// create links and network namespaces.
func requireTun(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces and links")
	}
	if _, err := os.Stat(tunPath); err != nil {
		tb.Skipf("needs %s: %v", tunPath, err)
	}
}

// inNetns runs fn on this goroutine's OS thread switched into a fresh,
// unnamed network namespace, and switches back afterwards. Every link fn
// creates lives in that namespace and dies with it when the last reference
// (the thread and the handle) goes, so nothing reaches the host's network.
// fn must close what it opens itself (defer inside fn): t.Cleanup functions
// run after the switch back, in the host namespace.
func inNetns(tb testing.TB, fn func()) {
	tb.Helper()
	requireTun(tb)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatalf("get current netns: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		tb.Fatalf("new netns: %v", err)
	}
	defer func() {
		// Back to the host namespace before anything else: a failure
		// here leaves the thread locked, so the runtime kills it when
		// the goroutine exits rather than reusing a thread in the test
		// namespace.
		if err := netns.Set(orig); err != nil {
			tb.Errorf("restore netns: %v", err)
			return
		}
		ns.Close()
		orig.Close()
		runtime.UnlockOSThread()
	}()
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		tb.Fatalf("lo up in test netns: %v", err)
	}
	fn()
}

// linkExists reports whether a link of that name is in the current netns.
func linkExists(tb testing.TB, name string) bool {
	tb.Helper()
	_, err := netlink.LinkByName(name)
	if err == nil {
		return true
	}
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return false
	}
	tb.Fatalf("look up %s: %v", name, err)
	return false
}
