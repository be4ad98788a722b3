package vmm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kvmm/kvmm/layout"
	"github.com/kvmm/kvmm/vcpu"
)

// Size is a byte count that reads and writes as "512M", "2G", "4096K" or a
// plain number of bytes.
type Size uint64

// ParseSize parses a size with an optional K, M, G or T suffix (powers of
// 1024, an optional trailing "B" or "iB" accepted).
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(strings.TrimSuffix(t, "iB"), "B")
	if t == "" {
		return 0, fmt.Errorf("size %q: empty", s)
	}
	mult := uint64(1)
	switch t[len(t)-1] {
	case 'k', 'K':
		mult = layout.KiB
	case 'm', 'M':
		mult = layout.MiB
	case 'g', 'G':
		mult = layout.GiB
	case 't', 'T':
		mult = 1 << 40
	}
	if mult != 1 {
		t = t[:len(t)-1]
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number with an optional K, M, G or T suffix", s)
	}
	if n > ^uint64(0)/mult {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return Size(n * mult), nil
}

// String formats the size with the largest exact unit.
func (s Size) String() string {
	switch {
	case s != 0 && s%layout.GiB == 0:
		return fmt.Sprintf("%dG", s/layout.GiB)
	case s != 0 && s%layout.MiB == 0:
		return fmt.Sprintf("%dM", s/layout.MiB)
	case s != 0 && s%layout.KiB == 0:
		return fmt.Sprintf("%dK", s/layout.KiB)
	}
	return strconv.FormatUint(uint64(s), 10)
}

// MarshalJSON writes the size as a string such as "512M".
func (s Size) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// UnmarshalJSON accepts "512M" or a plain byte count.
func (s *Size) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		v, err := ParseSize(str)
		if err != nil {
			return err
		}
		*s = v
		return nil
	}
	var n uint64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("size %s: want a string such as \"512M\" or a byte count", b)
	}
	*s = Size(n)
	return nil
}

// Duration is a time.Duration that reads and writes as "5s", "100ms".
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "5s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts "5s", "1m30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration %s: want a string such as \"5s\"", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// Reboot policies for a guest reset request (reset register, i8042, triple
// fault).
const (
	OnRebootReboot = "reboot"
	OnRebootExit   = "exit"
)

// Config is everything needed to build a VM. The CLI, the JSON config file
// and the Go API all produce one; Validate checks it before any KVM call.
type Config struct {
	// Kernel is a bzImage or a PVH ELF vmlinux; empty boots the built-in
	// self-test guest.
	Kernel  string `json:"kernel,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
	// Memory is guest RAM.
	Memory Size `json:"memory"`
	CPUs   int  `json:"cpus"`
	// CPUModel is "host" or "baseline".
	CPUModel string `json:"cpu,omitempty"`
	// Personality is the hypervisor the guest detects: "kvm", "hyperv" or
	// "vmware".
	Personality string `json:"personality,omitempty"`
	// HyperV picks the Hyper-V enlightenments (personality hyperv): a
	// comma-separated list such as "time,vpindex,crash,frequencies,vp-assist";
	// empty is that default set (see hyperv.ParseFeatures).
	HyperV string `json:"hyperv,omitempty"`
	// HyperVBackend is "auto" (empty: in-kernel when the host has it),
	// "kernel" or "user".
	HyperVBackend string `json:"hyperv_backend,omitempty"`
	// Balloon is the memory balloon: "none", "vmware" (personality vmware)
	// or "virtio" (virtio-balloon on PCI, any personality); empty is the
	// personality's own (vmware for personality vmware, none otherwise).
	// See balloon.go.
	Balloon string `json:"balloon,omitempty"`
	// HugePages backs guest RAM with hugetlbfs pages.
	HugePages bool `json:"hugepages,omitempty"`
	// OnReboot is "reboot" (default) or "exit".
	OnReboot string `json:"on_reboot,omitempty"`
	// WakeAfter wakes a guest that entered ACPI S3 after this long (0 =
	// wait for a wake source: API, power button, RTC alarm).
	WakeAfter Duration `json:"wake_after,omitempty"`
	// KVMDevice is the KVM device node, /dev/kvm by default.
	KVMDevice string `json:"kvm_device,omitempty"`
	// PCI is the PCI topology (pci.go).
	PCI PCIConfig `json:"pci,omitzero"`
	// Disks are virtio-blk disks, RNG adds a virtio-rng device, Console
	// is "serial" (default) or "virtio" (virtio-console); PCIBus is the
	// bus of the virtio devices that do not name their own. See virtio.go.
	Disks   []DiskConfig `json:"disks,omitempty"`
	RNG     bool         `json:"rng,omitempty"`
	Console string       `json:"console,omitempty"`
	PCIBus  int          `json:"pci_bus,omitempty"`
	// Net are the network interfaces, one virtio-net device each, in the
	// --net syntax (ParseNet, net.go): "tap=NAME|auto[,mac=..][,vhost=
	// on|off|auto][,queues=N][,bridge=BR][,bus=N]" or "macvtap=PARENT[,
	// mode=bridge|vepa|private|passthru][,...]".
	Net []string `json:"net,omitempty"`

	// virtioNoIOEventFD makes this package's tests take the MMIO
	// notification path. Unexported: no real VM wants it.
	virtioNoIOEventFD bool
}

// DefaultConfig is a 1-vCPU, 256 MiB VM that boots the built-in guest.
func DefaultConfig() Config {
	return Config{
		Memory:      256 * layout.MiB,
		CPUs:        1,
		CPUModel:    string(vcpu.ModelHost),
		Personality: string(vcpu.PersonalityKVM),
		OnReboot:    OnRebootReboot,
		KVMDevice:   "/dev/kvm",
		Cmdline:     "console=ttyS0 reboot=k panic=-1",
	}
}

// LoadConfigFile reads a JSON config over DefaultConfig. Unknown keys are
// errors: a misspelt setting must not be silently ignored.
func LoadConfigFile(path string) (Config, error) {
	cfg := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if dec.More() {
		return cfg, fmt.Errorf("config %s: trailing data after the JSON object", path)
	}
	return cfg, nil
}

// Limits that do not depend on the host.
const (
	MinMemory = 16 * layout.MiB
	// MaxMemory bounds what one VM may ask for (1 TiB).
	MaxMemory = 1 << 40
	// MaxCPUs is the most vCPUs the MADT and xAPIC IDs can describe.
	MaxCPUs = 254
)

// Validate checks the config without touching KVM; host limits (the number
// of vCPUs KVM allows) are checked by New before the VM is created.
func (c *Config) Validate() error {
	var errs []error
	if c.Memory < MinMemory || c.Memory > MaxMemory {
		errs = append(errs, fmt.Errorf("memory %s: must be between %s and %s", c.Memory, Size(MinMemory), Size(MaxMemory)))
	} else if c.Memory%layout.PageSize != 0 {
		errs = append(errs, fmt.Errorf("memory %s: must be a multiple of 4K", c.Memory))
	} else if c.HugePages && c.Memory%(2*layout.MiB) != 0 {
		errs = append(errs, fmt.Errorf("memory %s: must be a multiple of 2M with hugepages", c.Memory))
	}
	if c.CPUs < 1 || c.CPUs > MaxCPUs {
		errs = append(errs, fmt.Errorf("cpus %d: must be between 1 and %d", c.CPUs, MaxCPUs))
	}
	if _, err := vcpu.ParseModel(c.CPUModel); err != nil {
		errs = append(errs, err)
	}
	if _, err := vcpu.ParsePersonality(c.Personality); err != nil {
		errs = append(errs, err)
	}
	if err := validateHyperV(c); err != nil {
		errs = append(errs, err)
	}
	if err := validateBalloon(c); err != nil {
		errs = append(errs, err)
	}
	if err := validateVirtio(c); err != nil {
		errs = append(errs, err)
	}
	if err := validateNet(c); err != nil {
		errs = append(errs, err)
	}
	if c.OnReboot != OnRebootReboot && c.OnReboot != OnRebootExit {
		errs = append(errs, fmt.Errorf("on-reboot %q: want reboot or exit", c.OnReboot))
	}
	if len(c.Cmdline) >= layout.CmdlineMax {
		errs = append(errs, fmt.Errorf("cmdline: %d bytes, at most %d", len(c.Cmdline), layout.CmdlineMax-1))
	}
	if c.Kernel == "" && c.Initrd != "" {
		errs = append(errs, errors.New("initrd given without a kernel"))
	}
	for _, f := range []struct{ what, path string }{{"kernel", c.Kernel}, {"initrd", c.Initrd}} {
		if f.path == "" {
			continue
		}
		st, err := os.Stat(f.path)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", f.what, err))
		case !st.Mode().IsRegular():
			errs = append(errs, fmt.Errorf("%s %s: not a regular file", f.what, f.path))
		}
	}
	if err := c.PCI.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.WakeAfter < 0 {
		errs = append(errs, fmt.Errorf("wake-after %s: must not be negative", time.Duration(c.WakeAfter)))
	}
	if c.KVMDevice == "" {
		errs = append(errs, errors.New("kvm device: empty path"))
	}
	return errors.Join(errs...)
}
