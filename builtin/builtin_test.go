package builtin

import (
	"bytes"
	"os"
	"testing"

	"github.com/kvmm/kvmm/internal/guesttest"
)

// TestSelfTestUpToDate fails when testdata/guests/selftest.S (or what it
// includes) changed without `make builtin`: the embedded ELF must be what
// its source assembles to.
func TestSelfTestUpToDate(t *testing.T) {
	fresh, err := os.ReadFile(guesttest.BuildT(t, "selftest"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh, SelfTest()) {
		t.Fatal("builtin/selftest.elf is stale: run `make builtin` and commit the result")
	}
}

func TestSelfTestIsACopy(t *testing.T) {
	a := SelfTest()
	a[0] ^= 0xFF
	if SelfTest()[0] == a[0] {
		t.Fatal("SelfTest returned the embedded slice itself")
	}
}
