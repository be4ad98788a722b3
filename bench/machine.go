package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Machine describes the host a report was measured on.
type Machine struct {
	CPUModel string
	// CPUs is the number of logical CPUs (processor entries).
	CPUs int
	// HWVirt is "vmx", "svm" or "" when the CPU flags show neither: KVM
	// then runs on a software fallback (guest kernel code is emulated).
	HWVirt   string
	MemTotal uint64 // bytes
	Kernel   string // uname -r
	QEMU     string // first line of qemu-system-x86_64 --version, or why not
	Go       string
	// LoadBefore and LoadAfter are /proc/loadavg's 1-minute figures at the
	// start and the end of the run: how busy the machine was.
	LoadBefore, LoadAfter string
	Date                  time.Time
}

// CPUInfo is what ParseCPUInfo reads from /proc/cpuinfo.
type CPUInfo struct {
	Model  string
	CPUs   int
	HWVirt string
}

// ParseCPUInfo reads the first model name, the processor count and whether
// the flags include vmx or svm.
func ParseCPUInfo(data []byte) CPUInfo {
	var ci CPUInfo
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "processor":
			ci.CPUs++
		case "model name":
			if ci.Model == "" {
				ci.Model = val
			}
		case "flags":
			if ci.HWVirt == "" {
				for _, f := range strings.Fields(val) {
					if f == "vmx" || f == "svm" {
						ci.HWVirt = f
					}
				}
			}
		}
	}
	return ci
}

// ParseMemTotal returns MemTotal from /proc/meminfo, in bytes.
func ParseMemTotal(data []byte) (uint64, error) {
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("meminfo: unexpected MemTotal line %q", line)
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("meminfo: MemTotal: %w", err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("meminfo: no MemTotal line")
}

// loadAverage is the 1-minute load average, or "?".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// probeMachine describes this host. Missing pieces read "unknown" rather
// than failing the run.
func probeMachine(ctx context.Context, qemu string) Machine {
	m := Machine{Go: runtime.Version(), LoadBefore: loadAverage(), Date: time.Now().UTC(),
		CPUModel: "unknown", Kernel: "unknown", QEMU: "not installed"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		ci := ParseCPUInfo(b)
		if ci.Model != "" {
			m.CPUModel = ci.Model
		}
		m.CPUs, m.HWVirt = ci.CPUs, ci.HWVirt
	}
	if m.CPUs == 0 {
		m.CPUs = runtime.NumCPU()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemTotal, _ = ParseMemTotal(b)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		m.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	if qemu != "" {
		out, err := exec.CommandContext(ctx, qemu, "--version").Output()
		if err == nil {
			m.QEMU, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
		} else {
			m.QEMU = fmt.Sprintf("%s --version failed: %v", qemu, err)
		}
	}
	return m
}
