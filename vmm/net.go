package vmm

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netns"

	devnet "github.com/kvmm/kvmm/devices/virtio/net"
	"github.com/kvmm/kvmm/vhost"
)

// The VM's network interfaces (Config.Net): each --net option is a
// virtio-net device on PCI whose host side is a tap or a macvtap, served by
// the userspace backend or by vhost-net (vhost=on|off|auto).
//
// The host side belongs to the VM, not to a machine: taps, macvtaps and
// vhost-net instances are opened once in New and kept across guest reboots
// (so an auto tap keeps its name), and the VM's vhost.Cleanup removes them
// on every way the VM ends (finish: poweroff, crash, host stop, the CLI's
// SIGTERM/SIGINT, which stops the VM) and when New fails. Each machine puts
// a fresh device model on them.

// NetOption is one parsed --net value.
type NetOption struct {
	vhost.NetSpec
	// Bus is the PCI bus (bus=N); nil: Config.PCIBus.
	Bus *int
}

// ParseNet parses the --net syntax: vhost.ParseNetSpec's
//
//	tap=NAME|auto[,mac=MAC][,vhost=on|off|auto][,queues=N][,bridge=BR]
//	macvtap=PARENT[,mode=bridge|vepa|private|passthru][,mac=MAC][,vhost=...][,queues=N]
//
// plus bus=N, the PCI bus of the device.
func ParseNet(s string) (NetOption, error) {
	var o NetOption
	var rest []string
	for _, f := range strings.Split(s, ",") {
		key, val, _ := strings.Cut(f, "=")
		if key != "bus" {
			rest = append(rest, f)
			continue
		}
		if o.Bus != nil {
			return o, fmt.Errorf("--net %q: bus given twice", s)
		}
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 {
			return o, fmt.Errorf("--net %q: bus=%q: want a PCI bus number", s, val)
		}
		o.Bus = &n
	}
	spec, err := vhost.ParseNetSpec(strings.Join(rest, ","))
	if err != nil {
		return o, err
	}
	o.NetSpec = spec
	return o, nil
}

// validateNet checks the --net options without touching the host: syntax,
// buses, and no tap or MAC used twice.
func validateNet(c *Config) error {
	var errs []error
	taps := map[string]int{}
	macs := map[string]int{}
	for i, s := range c.Net {
		o, err := ParseNet(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("net %d: %w", i, err))
			continue
		}
		bus := c.PCIBus
		if o.Bus != nil {
			bus = *o.Bus
		}
		if bus < 0 || bus > c.PCI.Bridges {
			errs = append(errs, fmt.Errorf("net %d (%s): PCI bus %d does not exist (bus 0 is the root bus, 1..%d are behind bridges: --pci-bridges)",
				i, s, bus, c.PCI.Bridges))
		}
		if o.Kind == vhost.KindTap && o.Tap != vhost.TapAuto {
			if j, dup := taps[o.Tap]; dup {
				errs = append(errs, fmt.Errorf("net %d: tap %s is already net %d's", i, o.Tap, j))
			}
			taps[o.Tap] = i
		}
		if o.MAC != nil {
			if j, dup := macs[o.MAC.String()]; dup {
				errs = append(errs, fmt.Errorf("net %d: MAC %s is already net %d's", i, o.MAC, j))
			}
			macs[o.MAC.String()] = i
		}
	}
	return errors.Join(errs...)
}

// netHost is the host side of the VM's network interfaces.
type netHost struct {
	log     *slog.Logger
	cleanup vhost.Cleanup
	// ns is the network namespace the links were created in: netlink
	// acts in the namespace of the calling thread, and the clean-up may
	// run on any (see close).
	ns        netns.NsHandle
	nics      []*hostNIC
	closeOnce sync.Once
	closeErr  error
}

// hostNIC is one --net option's host side.
type hostNIC struct {
	bus     int
	tap     *vhost.Tap
	backend *vhost.NetBackend // nil: the userspace backend
	mac     devnet.MAC
}

// openNetHost opens every --net option's interface and, where vhost is
// chosen, its vhost-net instances. vhost=on without a usable vhost-net is
// an error here, before anything is created; vhost=auto logs which backend
// it took. On error everything opened so far is removed.
func openNetHost(c Config, log *slog.Logger) (*netHost, error) {
	if len(c.Net) == 0 {
		return nil, nil
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("net: current network namespace: %w", err)
	}
	h := &netHost{log: log, ns: ns}
	for i, s := range c.Net {
		if err := h.open(i, s, c.PCIBus); err != nil {
			return nil, errors.Join(fmt.Errorf("net %d (%s): %w", i, s, err), h.close())
		}
	}
	return h, nil
}

func (h *netHost) open(i int, s string, defaultBus int) error {
	o, err := ParseNet(s)
	if err != nil {
		return err
	}
	useVhost, reason, err := vhost.Choose(o.Vhost)
	if err != nil {
		return err
	}
	nic := &hostNIC{bus: defaultBus}
	if o.Bus != nil {
		nic.bus = *o.Bus
	}
	log := h.log.With("net", i)
	if nic.tap, err = vhost.Open(o.NetSpec, &h.cleanup, log); err != nil {
		return err
	}
	switch {
	case nic.tap.MAC() != nil:
		// A macvtap delivers only frames for its own address, which is
		// the guest's (mac= became the link's when given).
		copy(nic.mac[:], nic.tap.MAC())
	case o.MAC != nil:
		copy(nic.mac[:], o.MAC)
	default:
		nic.mac = defaultMAC(nic.tap.Name())
	}
	if useVhost {
		if nic.backend, err = vhost.OpenNet(o.Queues, log); err != nil {
			return err
		}
		// Registered after the tap, so it is undone before it.
		h.cleanup.Add(nic.backend.Close)
	}
	log.Info("network interface", "kind", o.Kind, "name", nic.tap.Name(), "created", nic.tap.Created(),
		"mac", nic.mac.String(), "queues", o.Queues, "bus", nic.bus, "backend", reason)
	h.nics = append(h.nics, nic)
	return nil
}

// defaultMAC derives a guest MAC from the interface name: QEMU's locally
// administered 52:54:00 prefix and three bytes of a hash, so a VM on the
// same tap gets the same address every run.
func defaultMAC(ifname string) devnet.MAC {
	sum := sha256.Sum256([]byte("kvmm:" + ifname))
	return devnet.MAC{0x52, 0x54, 0x00, sum[0], sum[1], sum[2]}
}

// close undoes everything (idempotent). It runs in the namespace the links
// were created in, on a thread of its own: a VM built on a test's thread in
// a test namespace ends on another thread, in the host's namespace, where
// deleting "ifindex N" would hit some other link.
func (h *netHost) close() error {
	if h == nil {
		return nil
	}
	h.closeOnce.Do(func() {
		done := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			cur, err := netns.Get()
			if err != nil {
				runtime.UnlockOSThread()
				done <- fmt.Errorf("net clean-up: current network namespace: %w", err)
				return
			}
			defer cur.Close()
			if !cur.Equal(h.ns) {
				if err := netns.Set(h.ns); err != nil {
					runtime.UnlockOSThread()
					done <- fmt.Errorf("net clean-up: entering the VM's network namespace: %w", err)
					return
				}
			}
			err = h.cleanup.Run()
			if netns.Set(cur) == nil {
				// A thread left in the VM's namespace stays locked and
				// dies with this goroutine instead of serving others.
				runtime.UnlockOSThread()
			}
			done <- err
		}()
		h.closeErr = <-done
		h.ns.Close()
		if h.closeErr != nil {
			h.log.Warn("removing the VM's network interfaces", "err", h.closeErr)
		}
	})
	return h.closeErr
}

// addNet puts a virtio-net device on each of the VM's interfaces; the
// transports are built with the other virtio devices (attachVirtio).
func (m *machine) addNet(h *netHost) error {
	if h == nil {
		return nil
	}
	for i, nic := range h.nics {
		name := fmt.Sprintf("virtio-net%d", i)
		c := devnet.Config{MAC: nic.mac, Host: devnet.TapHost(nic.tap), Name: name, Log: m.log.With("dev", name)}
		if nic.backend != nil {
			c.Vhost = nic.backend
		}
		dev, err := devnet.New(c)
		if err != nil {
			return err
		}
		m.virtio.devs = append(m.virtio.devs, &virtioDev{name: name, bus: nic.bus, dev: dev})
	}
	return nil
}
