package vmm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kvmm/kvmm/devices/pci"
	"github.com/kvmm/kvmm/devices/virtio"
	virtioballoon "github.com/kvmm/kvmm/devices/virtio/balloon"
	"github.com/kvmm/kvmm/devices/virtio/blk"
	"github.com/kvmm/kvmm/devices/virtio/console"
	"github.com/kvmm/kvmm/devices/virtio/rng"
	"github.com/kvmm/kvmm/kvmext"
)

// The machine's virtio devices on PCI: disks (Config.Disks), the entropy
// device (Config.RNG) and the virtio console (Config.Console). The device
// models and the transport live in devices/virtio; this file opens their
// backends, puts each behind a virtio-pci transport on the bus the config
// names, binds queue notifications to KVM ioeventfds, routes the console,
// and closes everything with the machine.

// Console kinds (Config.Console).
const (
	// ConsoleSerial (or empty) is COM1: the terminal is the UART.
	ConsoleSerial = "serial"
	// ConsoleVirtio is virtio-console (Linux's hvc0): the terminal's input
	// goes to it and its output to the terminal. The UART's output still
	// reaches the terminal (early boot messages), its input nothing.
	ConsoleVirtio = "virtio"
)

// DiskConfig is one virtio-blk disk.
type DiskConfig struct {
	// Path is a raw image file or a block device.
	Path string `json:"path"`
	// ReadOnly offers VIRTIO_BLK_F_RO and refuses writes.
	ReadOnly bool `json:"readonly,omitempty"`
	// Serial is what the guest reads with GET_ID (at most 20 bytes;
	// /sys/block/vdX/serial in Linux).
	Serial string `json:"serial,omitempty"`
	// Bus is the PCI bus: 0 is the root bus, N > 0 the secondary bus of
	// bridge N (PCI.Bridges must be at least N). Absent: Config.PCIBus.
	Bus *int `json:"bus,omitempty"`
}

// busOf is the bus d goes on.
func (c *Config) busOf(d DiskConfig) int {
	if d.Bus != nil {
		return *d.Bus
	}
	return c.PCIBus
}

// ParseDisk parses the --disk syntax: PATH[,readonly][,serial=ID][,bus=N].
// A path containing commas cannot be given this way (use the JSON config).
func ParseDisk(s string) (DiskConfig, error) {
	parts := strings.Split(s, ",")
	d := DiskConfig{Path: parts[0]}
	if d.Path == "" {
		return d, fmt.Errorf("disk %q: empty path (want PATH[,readonly][,serial=ID][,bus=N])", s)
	}
	for _, p := range parts[1:] {
		key, val, hasVal := strings.Cut(p, "=")
		switch {
		case key == "readonly" && !hasVal, key == "ro" && !hasVal:
			d.ReadOnly = true
		case key == "readonly" || key == "ro":
			b, err := strconv.ParseBool(val)
			if err != nil {
				return d, fmt.Errorf("disk %q: readonly=%q: want true or false", s, val)
			}
			d.ReadOnly = b
		case key == "serial" && hasVal:
			d.Serial = val
		case key == "bus" && hasVal:
			n, err := strconv.Atoi(val)
			if err != nil {
				return d, fmt.Errorf("disk %q: bus=%q: want a bus number", s, val)
			}
			d.Bus = &n
		default:
			return d, fmt.Errorf("disk %q: unknown option %q (want readonly, serial=ID or bus=N)", s, p)
		}
	}
	return d, nil
}

// pciSlotsPerBus is what one bus holds; bus 0 also has the host bridge and
// the bridges.
const pciSlotsPerBus = 32

// validateVirtio checks the virtio part of a config without touching KVM.
func validateVirtio(c *Config) error {
	var errs []error
	switch c.Console {
	case "", ConsoleSerial, ConsoleVirtio:
	default:
		errs = append(errs, fmt.Errorf("console %q: want serial or virtio", c.Console))
	}
	checkBus := func(what string, bus int) error {
		if bus < 0 || bus > c.PCI.Bridges {
			if bus > 0 && bus <= MaxPCIBridges {
				return fmt.Errorf("%s: PCI bus %d needs %d PCI-to-PCI bridges (--pci-bridges %d); the VM has %d",
					what, bus, bus, bus, c.PCI.Bridges)
			}
			return fmt.Errorf("%s: PCI bus %d does not exist (bus 0 is the root bus, 1..%d are behind bridges)",
				what, bus, c.PCI.Bridges)
		}
		return nil
	}
	perBus := map[int]int{}
	seen := map[string]int{}
	for i, d := range c.Disks {
		what := fmt.Sprintf("disk %d (%s)", i, d.Path)
		bus := c.busOf(d)
		if err := checkBus(what, bus); err != nil {
			errs = append(errs, err)
		}
		perBus[bus]++
		if len(d.Serial) > blk.IDBytes {
			errs = append(errs, fmt.Errorf("%s: serial %q is longer than %d bytes", what, d.Serial, blk.IDBytes))
		}
		if d.Path == "" {
			errs = append(errs, fmt.Errorf("disk %d: empty path", i))
			continue
		}
		st, err := os.Stat(d.Path)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		case !st.Mode().IsRegular() && st.Mode()&os.ModeDevice == 0:
			errs = append(errs, fmt.Errorf("%s: not a regular file or a block device", what))
		}
		abs, err := filepath.Abs(d.Path)
		if err != nil {
			abs = d.Path
		}
		if j, dup := seen[abs]; dup {
			errs = append(errs, fmt.Errorf("%s: the same image as disk %d", what, j))
		}
		seen[abs] = i
	}
	if c.RNG || c.Console == ConsoleVirtio {
		if err := checkBus("pci-bus", c.PCIBus); err != nil {
			errs = append(errs, err)
		}
		if c.RNG {
			perBus[c.PCIBus]++
		}
		if c.Console == ConsoleVirtio {
			perBus[c.PCIBus]++
		}
	}
	if c.balloonKind() == BalloonVirtio { // virtio-balloon (balloon.go)
		if err := checkBus("balloon virtio: pci-bus", c.PCIBus); err != nil {
			errs = append(errs, err)
		}
		perBus[c.PCIBus]++
	}
	for bus, n := range perBus {
		free := pciSlotsPerBus
		if bus == 0 {
			free -= 1 + c.PCI.Bridges // the host bridge and the bridges
		}
		if n > free {
			errs = append(errs, fmt.Errorf("PCI bus %d: %d virtio devices, only %d free slots", bus, n, free))
		}
	}
	return errors.Join(errs...)
}

// virtioState is the machine's virtio devices.
type virtioState struct {
	devs    []*virtioDev
	console *console.Device       // the VM's console when Config.Console is virtio
	balloon *virtioballoon.Device // the VM's balloon when Config.Balloon is virtio
}

type virtioDev struct {
	name string
	bus  int
	dev  virtio.Device
	t    *virtio.Transport // nil until attached
}

// addVirtio opens the configured devices' backends (disk images are
// locked, so another VM cannot write them meanwhile); attachVirtio puts
// them on PCI. serialOut is the console's output.
func (m *machine) addVirtio(serialOut io.Writer) error {
	st := &virtioState{}
	m.virtio = st
	for i, d := range m.cfg.Disks {
		name := fmt.Sprintf("virtio-blk%d", i)
		dev, err := blk.New(blk.Config{Path: d.Path, ReadOnly: d.ReadOnly, Serial: d.Serial, Log: m.log.With("dev", name)})
		if err != nil {
			return fmt.Errorf("disk %d: %w", i, err)
		}
		st.devs = append(st.devs, &virtioDev{name: name, bus: m.cfg.busOf(d), dev: dev})
	}
	if m.cfg.RNG {
		st.devs = append(st.devs, &virtioDev{name: "virtio-rng", bus: m.cfg.PCIBus,
			dev: rng.New(rng.Config{Log: m.log.With("dev", "virtio-rng")})})
	}
	if m.cfg.Console == ConsoleVirtio {
		c, err := console.New(console.Config{Output: serialOut, Log: m.log.With("dev", "virtio-console")})
		if err != nil {
			return err
		}
		st.console = c
		st.devs = append(st.devs, &virtioDev{name: "virtio-console", bus: m.cfg.PCIBus, dev: c})
	}
	return m.addVirtioBalloon(st) // balloon.go
}

// ioeventfdAnyLength is KVM_CAP_IOEVENTFD_ANY_LENGTH: a zero-length
// ioeventfd matches a write of any size (and takes KVM's fast MMIO path).
const ioeventfdAnyLength = 122

// kvmIOEventFDs registers queue notification addresses with KVM.
type kvmIOEventFDs struct {
	vmFd   uintptr
	length uint32
}

func (k kvmIOEventFDs) Register(addr uint64, fd int) error {
	return kvmext.IOEventFD(k.vmFd, addr, k.length, fd, 0, 0)
}

func (k kvmIOEventFDs) Unregister(addr uint64, fd int) error {
	return kvmext.IOEventFD(k.vmFd, addr, k.length, fd, kvmext.IOEventFDDeassign, 0)
}

// attachVirtio builds each device's PCI function and adds it to its bus,
// before the PCI root enumerates. Bus N is the secondary bus of the Nth
// bridge (bridges sit in the first slots of bus 0, numbered in order).
func (m *machine) attachVirtio(root *pci.Root, bridges []*pci.Bridge) error {
	st := m.virtio
	if st == nil || len(st.devs) == 0 {
		return nil
	}
	var ioev virtio.IOEventFDs
	if n, err := kvmext.CheckExtension(m.vmFd, kvmext.CapIOEventFD); err == nil && n > 0 && !m.cfg.virtioNoIOEventFD {
		k := kvmIOEventFDs{vmFd: m.vmFd, length: 2} // Linux writes the 16-bit queue index
		if n, err := kvmext.CheckExtension(m.vmFd, ioeventfdAnyLength); err == nil && n > 0 {
			k.length = 0
		}
		ioev = k
	} else {
		m.log.Info("virtio: no ioeventfd; queue notifications go through MMIO exits")
	}
	for _, d := range st.devs {
		t, err := virtio.NewTransport(virtio.TransportConfig{Device: d.dev, Mem: m.mem, Router: root.Router(),
			IOEventFDs: ioev, Name: d.name, Log: m.log})
		if err != nil {
			return err
		}
		d.t = t
		bus := root.Bus0()
		if d.bus > 0 {
			if d.bus > len(bridges) {
				return fmt.Errorf("%s: PCI bus %d needs %d bridges, the VM has %d", d.name, d.bus, d.bus, len(bridges))
			}
			bus = bridges[d.bus-1].Secondary()
		}
		if _, err := bus.Add(t); err != nil {
			return fmt.Errorf("%s on PCI bus %d: %w", d.name, d.bus, err)
		}
	}
	return nil
}

// closeVirtio stops every device (workers end, disks are synced and
// closed, ioeventfds removed); it runs before the VM fd is closed.
func (m *machine) closeVirtio() error {
	if m.virtio == nil {
		return nil
	}
	if b := m.virtio.balloon; b != nil {
		b.Shutdown() // the closing reset is not the guest's: keep the last balloon stats
	}
	var errs []error
	for _, d := range m.virtio.devs {
		if d.t != nil {
			errs = append(errs, d.t.Close())
		} else {
			d.dev.Reset()
			errs = append(errs, d.dev.Close())
		}
	}
	// m.virtio stays: SendInput may still read it (and finds a closed
	// console, which drops input).
	return errors.Join(errs...)
}

// sendInput is the terminal's input: to the virtio console when it is the
// console, else to COM1.
func (m *machine) sendInput(b []byte) int {
	if v := m.virtio; v != nil && v.console != nil {
		return v.console.Enqueue(b)
	}
	return m.serial.Enqueue(b)
}

// virtioTransports lists the transports by device name (tests, metrics).
func (m *machine) virtioTransports() map[string]*virtio.Transport {
	out := map[string]*virtio.Transport{}
	if m.virtio != nil {
		for _, d := range m.virtio.devs {
			if d.t != nil {
				out[d.name] = d.t
			}
		}
	}
	return out
}
