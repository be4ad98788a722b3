// Package guesttest builds the tiny x86 test guests in testdata/guests and
// runs them under QEMU, so that other packages' tests (and the guests' own
// QEMU tests, the oracle that proves them right independently of kvmm) can
// boot them.
//
// The guests are ELF64 images linked at 1 MiB that boot through the Xen PVH
// entry (an XEN_ELFNOTE_PHYS32_ENTRY note), print over COM1 and end by
// writing to QEMU's isa-debug-exit port 0xF4: PassCode (status PassStatus)
// after printing "PASS <name>", FailCode (status FailStatus) after printing
// "FAIL <name>: <reason>". See testdata/guests/lib.inc.
package guesttest

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Verdict convention shared with testdata/guests/lib.inc.
const (
	// DebugExitPort is the isa-debug-exit port the guests write their
	// verdict to (a 32-bit OUT).
	DebugExitPort = 0xF4
	// PassCode and FailCode are the values written to DebugExitPort.
	PassCode = 0x10
	FailCode = 0x11
	// PassStatus and FailStatus are the resulting process exit statuses
	// under QEMU, whose isa-debug-exit exits with (value << 1) | 1.
	PassStatus = PassCode<<1 | 1 // 33
	FailStatus = FailCode<<1 | 1 // 35
)

// PassLine and FailPrefix return the verdict lines a guest prints.
func PassLine(name string) string { return "PASS " + name }

// FailPrefix is the start of the line a failing guest prints, followed by
// its reason.
func FailPrefix(name string) string { return "FAIL " + name + ": " }

// GuestsDir is the guests' directory relative to the repository root.
const GuestsDir = "testdata/guests"

// LoadAddr is where the guests are linked (guest.ld).
const LoadAddr = 0x100000

const (
	linkerScript = "guest.ld"
	srcExt       = ".S"
	// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY.
	xenElfnotePhys32Entry = 18
)

// Root returns the repository root: the nearest directory at or above the
// working directory that contains go.mod.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("guesttest: working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("guesttest: looking for go.mod: %w", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("guesttest: no go.mod found above the working directory")
		}
		dir = parent
	}
}

// Guests returns the names of all guests: every testdata/guests/<name>.S.
// Shared include files use another extension (lib.inc, smp.inc, acpi_pm.inc)
// and are not guests.
func Guests() ([]string, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(root, GuestsDir))
	if err != nil {
		return nil, fmt.Errorf("guesttest: listing guests: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), srcExt) {
			names = append(names, strings.TrimSuffix(e.Name(), srcExt))
		}
	}
	sort.Strings(names)
	return names, nil
}

// BinutilsAvailable reports whether GNU as and ld are installed.
func BinutilsAvailable() error {
	for _, tool := range []string{"as", "ld"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("guesttest: %s not found; the test guests need GNU binutils (Debian package binutils): %w", tool, err)
		}
	}
	return nil
}

// Build assembles and links testdata/guests/<name>.S into dir/<name>.elf and
// returns that path. The result is an ELF64 linked at LoadAddr with a PVH
// entry note. It fails, mentioning binutils, when as or ld is missing.
func Build(dir, name string) (string, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("guesttest: invalid guest name %q", name)
	}
	if err := BinutilsAvailable(); err != nil {
		return "", err
	}
	root, err := Root()
	if err != nil {
		return "", err
	}
	gdir := filepath.Join(root, GuestsDir)
	src := filepath.Join(gdir, name+srcExt)
	if _, err := os.Stat(src); err != nil {
		return "", fmt.Errorf("guesttest: guest %q: %w", name, err)
	}
	obj := filepath.Join(dir, name+".o")
	out := filepath.Join(dir, name+".elf")
	// Always 64-bit objects: the code starts in .code32 (the PVH entry) and
	// some guests switch to .code64; the image is an ELF64 like vmlinux.
	if err := run("as", "--64", "-I", gdir, "-o", obj, src); err != nil {
		return "", fmt.Errorf("guesttest: assembling %s: %w", name, err)
	}
	if err := run("ld", "-m", "elf_x86_64", "-static", "-nostdlib",
		"--build-id=none", "-z", "noexecstack",
		"-T", filepath.Join(gdir, linkerScript), "-o", out, obj); err != nil {
		return "", fmt.Errorf("guesttest: linking %s: %w", name, err)
	}
	return out, nil
}

// BuildT is Build for tests: the ELF goes to t.TempDir(), a missing binutils
// skips the test and any other error fails it.
func BuildT(t testing.TB, name string) string {
	t.Helper()
	if err := BinutilsAvailable(); err != nil {
		t.Skipf("skipping: %v (apt-get install binutils)", err)
	}
	path, err := Build(t.TempDir(), name)
	if err != nil {
		t.Fatalf("building guest %s: %v", name, err)
	}
	return path
}

func run(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return nil
}

// PVHEntry returns the 32-bit physical entry point of a PVH ELF image: the
// XEN_ELFNOTE_PHYS32_ENTRY descriptor found in its PT_NOTE segments (4 or 8
// bytes, little endian).
func PVHEntry(path string) (uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, fmt.Errorf("guesttest: reading %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			return 0, fmt.Errorf("guesttest: reading PT_NOTE of %s: %w", path, err)
		}
		if entry, ok := findXenEntry(data); ok {
			return entry, nil
		}
	}
	return 0, fmt.Errorf("guesttest: %s has no Xen PHYS32_ENTRY note", path)
}

// findXenEntry walks ELF notes (4-byte aligned fields) for name "Xen",
// type XEN_ELFNOTE_PHYS32_ENTRY.
func findXenEntry(data []byte) (uint64, bool) {
	align4 := func(n uint32) uint32 { return (n + 3) &^ 3 }
	le := binary.LittleEndian
	for len(data) >= 12 {
		namesz, descsz, typ := le.Uint32(data), le.Uint32(data[4:]), le.Uint32(data[8:])
		rest := data[12:]
		nameEnd, descEnd := uint64(align4(namesz)), uint64(align4(namesz))+uint64(align4(descsz))
		if descEnd > uint64(len(rest)) {
			return 0, false
		}
		name := string(bytes.TrimRight(rest[:namesz], "\x00"))
		desc := rest[nameEnd : nameEnd+uint64(descsz)]
		if name == "Xen" && typ == xenElfnotePhys32Entry {
			switch len(desc) {
			case 4:
				return uint64(le.Uint32(desc)), true
			case 8:
				return le.Uint64(desc), true
			}
		}
		data = rest[descEnd:]
	}
	return 0, false
}
