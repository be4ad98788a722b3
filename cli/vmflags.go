package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kvmm/kvmm/vmm"
)

// vmFlags are the flags that describe a VM, shared by run and test.
type vmFlags struct {
	configFile string
	kernel     string
	initrd     string
	cmdline    string
	mem        string
	cpus       int
	cpuModel   string
	persona    string
	balloon    string
	hyperv     string
	hvBackend  string
	hugepages  bool
	onReboot   string
	kvmDevice  string
	wakeAfter  time.Duration
	pciBridges int
	disks      []string
	rng        bool
	console    string
	pciBus     int
	nets       []string
}

func (f *vmFlags) register(fs *pflag.FlagSet) {
	d := vmm.DefaultConfig()
	fs.StringVar(&f.configFile, "config", "", "JSON config file (flags override it)")
	fs.StringVar(&f.kernel, "kernel", "", "kernel: bzImage or PVH ELF vmlinux (default: the built-in self-test guest)")
	fs.StringVar(&f.initrd, "initrd", "", "initial ramdisk")
	fs.StringVar(&f.cmdline, "cmdline", d.Cmdline, "kernel command line")
	fs.StringVar(&f.mem, "mem", d.Memory.String(), "guest memory, e.g. 512M or 2G")
	fs.IntVar(&f.cpus, "cpus", d.CPUs, "number of vCPUs")
	fs.StringVar(&f.cpuModel, "cpu", d.CPUModel, "CPU model: host or baseline")
	fs.StringVar(&f.persona, "personality", d.Personality, "hypervisor the guest detects: kvm, hyperv or vmware")
	fs.StringVar(&f.balloon, "balloon", "", "memory balloon: none, vmware (personality vmware) or virtio (virtio-balloon on PCI, any personality); default: vmware for personality vmware, else none")
	fs.StringVar(&f.hyperv, "hyperv", "", "Hyper-V enlightenments (--personality hyperv), comma-separated: time, vpindex, crash, frequencies, vp-assist, tsc-invariant, synic, stimer (default time,vpindex,crash,frequencies,vp-assist)")
	fs.StringVar(&f.hvBackend, "hyperv-backend", "auto", "Hyper-V implementation: auto (in-kernel when the host has it), kernel or user")
	fs.BoolVar(&f.hugepages, "hugepages", false, "back guest memory with 2M huge pages")
	fs.StringVar(&f.onReboot, "on-reboot", d.OnReboot, "what a guest reset does: reboot or exit")
	fs.StringVar(&f.kvmDevice, "kvm-device", d.KVMDevice, "KVM device node")
	fs.IntVar(&f.pciBridges, "pci-bridges", 0, "PCI-to-PCI bridges on bus 0, each with a secondary bus (buses 1..N)")
	fs.DurationVar(&f.wakeAfter, "wake-after", 0, "wake a guest that suspended to RAM (ACPI S3) after this long, e.g. 5s")
	fs.StringArrayVar(&f.disks, "disk", nil, "virtio-blk disk PATH[,readonly][,serial=ID][,bus=N] (repeatable; replaces the config file's disks)")
	fs.BoolVar(&f.rng, "rng", false, "add a virtio-rng entropy device")
	fs.StringVar(&f.console, "console", vmm.ConsoleSerial, "the terminal's device: serial (COM1, ttyS0) or virtio (virtio-console, hvc0)")
	fs.IntVar(&f.pciBus, "pci-bus", 0, "PCI bus of virtio devices without a bus= of their own; N > 0 is behind bridge N (see --pci-bridges)")
	fs.StringArrayVar(&f.nets, "net", nil, "virtio-net interface tap=NAME|auto[,mac=MAC][,vhost=on|off|auto][,queues=N][,bridge=BR][,bus=N] "+
		"or macvtap=PARENT[,mode=bridge|vepa|private|passthru][,mac=MAC][,vhost=...][,queues=N][,bus=N] (repeatable; replaces the config file's)")
}

// config builds the VM config: defaults, then the config file, then every
// flag the user set explicitly.
func (f *vmFlags) config(cmd *cobra.Command) (vmm.Config, error) {
	cfg := vmm.DefaultConfig()
	if f.configFile != "" {
		c, err := vmm.LoadConfigFile(f.configFile)
		if err != nil {
			return cfg, err
		}
		cfg = c
	}
	fs := cmd.Flags()
	set := func(name string, apply func() error) error {
		if !fs.Changed(name) {
			return nil
		}
		return apply()
	}
	errs := []error{
		set("kernel", func() error { cfg.Kernel = f.kernel; return nil }),
		set("initrd", func() error { cfg.Initrd = f.initrd; return nil }),
		set("cmdline", func() error { cfg.Cmdline = f.cmdline; return nil }),
		set("mem", func() error {
			s, err := vmm.ParseSize(f.mem)
			if err != nil {
				return fmt.Errorf("--mem: %w", err)
			}
			cfg.Memory = s
			return nil
		}),
		set("cpus", func() error { cfg.CPUs = f.cpus; return nil }),
		set("cpu", func() error { cfg.CPUModel = f.cpuModel; return nil }),
		set("personality", func() error { cfg.Personality = f.persona; return nil }),
		set("balloon", func() error { cfg.Balloon = f.balloon; return nil }),
		set("hyperv", func() error { cfg.HyperV = f.hyperv; return nil }),
		set("hyperv-backend", func() error { cfg.HyperVBackend = f.hvBackend; return nil }),
		set("hugepages", func() error { cfg.HugePages = f.hugepages; return nil }),
		set("on-reboot", func() error { cfg.OnReboot = f.onReboot; return nil }),
		set("kvm-device", func() error { cfg.KVMDevice = f.kvmDevice; return nil }),
		set("wake-after", func() error { cfg.WakeAfter = vmm.Duration(f.wakeAfter); return nil }),
		set("pci-bridges", func() error { cfg.PCI.Bridges = f.pciBridges; return nil }),
		set("disk", func() error {
			cfg.Disks = nil
			for _, s := range f.disks {
				d, err := vmm.ParseDisk(s)
				if err != nil {
					return fmt.Errorf("--disk: %w", err)
				}
				cfg.Disks = append(cfg.Disks, d)
			}
			return nil
		}),
		set("rng", func() error { cfg.RNG = f.rng; return nil }),
		set("console", func() error { cfg.Console = f.console; return nil }),
		set("pci-bus", func() error { cfg.PCIBus = f.pciBus; return nil }),
		set("net", func() error {
			cfg.Net = nil
			for _, s := range f.nets {
				if _, err := vmm.ParseNet(s); err != nil {
					return fmt.Errorf("--net: %w", err)
				}
				cfg.Net = append(cfg.Net, s)
			}
			return nil
		}),
	}
	for _, err := range errs {
		if err != nil {
			return cfg, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}
