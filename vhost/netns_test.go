package vhost_test

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

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
