// Package builtin holds the self-test guest that `kvmm` boots when no kernel
// is given. Its source is testdata/guests/selftest.S, a test guest like the
// others (so it also runs under QEMU as its own oracle); the assembled ELF is
// committed here so that `go build` needs no assembler. `make builtin`
// (go generate) rebuilds it, and TestSelfTestUpToDate fails when the
// committed ELF no longer matches its source.
package builtin

import _ "embed"

//go:generate sh ./build.sh

//go:embed selftest.elf
var selfTest []byte

// SelfTest returns a copy of the built-in guest: a PVH ELF.
func SelfTest() []byte {
	return append([]byte(nil), selfTest...)
}
