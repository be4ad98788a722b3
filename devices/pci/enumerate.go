package pci

import (
	"errors"
	"fmt"
	"sort"
)

// resKind is the window a BAR's address comes from.
type resKind int

const (
	resIO   resKind = iota // I/O ports
	resMem                 // 32-bit memory (bridge memory window)
	resPref                // 64-bit prefetchable (bridge prefetchable window)
	numResKinds
)

var resNames = [numResKinds]string{"io", "mem", "pref"}

// granularity of each kind's bridge window.
var windowGranularity = [numResKinds]uint64{ioWindowGranularity, memWindowGranularity, memWindowGranularity}

func kindOf(b BAR) resKind {
	switch {
	case b.Kind == BARIO:
		return resIO
	case b.Kind == BARMem64 && b.Prefetchable:
		return resPref
	}
	// 32-bit BARs (prefetchable or not) and 64-bit non-prefetchable BARs
	// need an address below 4 GiB: a bridge's memory window is 32-bit.
	return resMem
}

// request is one thing to place: a BAR or a bridge window.
type request struct {
	size, align uint64
	what        string
	assign      func(base uint64)
}

// Enumerate does what firmware does before the OS starts, so that a guest
// that keeps firmware assignments (Linux by default, the test guests) sees
// a consistent topology: it numbers the buses depth first, gives every BAR
// an address from the allocator, programs each bridge's windows to cover
// everything behind it (a closed window where nothing is), writes each
// interrupt line, and enables memory and I/O decoding where there is
// something to decode. Bus mastering stays off, as SeaBIOS leaves it:
// drivers enable it (pci_set_master) when they are ready for DMA.
// Functions cannot be added afterwards.
func (r *Root) Enumerate() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.enumerated {
		return errors.New("PCI: already enumerated")
	}
	next := 1
	if err := r.numberBuses(r.bus0, 0, &next); err != nil {
		return err
	}
	windows := map[*Bridge]*[numResKinds]Range{}
	top := r.requests(r.bus0, "00", windows)
	for k := range numResKinds {
		space := r.alloc.IO
		switch resKind(k) {
		case resMem:
			space = r.alloc.MMIO32
		case resPref:
			space = r.alloc.MMIO32
			if r.alloc.MMIO64 != nil {
				space = r.alloc.MMIO64
			}
		}
		reqs := top[k]
		sortRequests(reqs)
		for _, q := range reqs {
			base, err := space.Allocate(q.size, q.align)
			if err != nil {
				return fmt.Errorf("PCI: %s: %w", q.what, err)
			}
			q.assign(base)
		}
	}
	for br, w := range windows {
		br.setWindows(w[resIO], w[resMem], w[resPref])
	}
	r.walk(func(b *Bus, slot, _ uint8, f Function) {
		c := f.PCIConfig()
		if c == r.host {
			return
		}
		var cmd uint16
		c.mu.Lock()
		for _, bs := range c.bars {
			if bs == nil {
				continue
			}
			if bs.Kind == BARIO {
				cmd |= CmdIO
			} else {
				cmd |= CmdMemory
			}
		}
		pin := c.pin
		c.mu.Unlock()
		if br, ok := f.(*Bridge); ok {
			if w := windows[br]; w != nil {
				if w[resIO].Size() > 0 {
					cmd |= CmdIO
				}
				if w[resMem].Size() > 0 || w[resPref].Size() > 0 {
					cmd |= CmdMemory
				}
			}
		}
		if cmd != 0 {
			c.write16(RegCommand, c.Command()|cmd)
		}
		if pin != PinNone {
			// Firmware writes the IRQ it routed; with ACPI Linux takes the
			// _PRT's GSI instead, which is the same number.
			c.write8(RegInterruptLine, uint8(b.rootGSI(slot, pin)))
		}
	})
	r.enumerated = true
	r.remap()
	return nil
}

// numberBuses gives every bridge below b (whose number is num) its primary,
// secondary and subordinate bus numbers, depth first.
func (r *Root) numberBuses(b *Bus, num uint8, next *int) error {
	for s := range b.fns {
		for _, f := range b.fns[s] {
			br, ok := f.(*Bridge)
			if !ok {
				continue
			}
			if *next > 255 {
				return errors.New("PCI: more than 255 bridges: out of bus numbers")
			}
			sec := uint8(*next)
			*next++
			c := br.cfg
			c.write8(RegPrimaryBus, num)
			c.write8(RegSecondaryBus, sec)
			c.write8(RegSubordinateBus, 0xFF)
			if err := r.numberBuses(br.secondary, sec, next); err != nil {
				return err
			}
			c.write8(RegSubordinateBus, uint8(*next-1))
		}
	}
	return nil
}

// requests lists what bus b needs, per kind: its functions' BARs, and for
// each bridge one window per kind sized to hold (aligned) everything
// behind it. A window's assign places its contents at the offsets chosen
// while sizing it and records the window for the bridge.
func (r *Root) requests(b *Bus, busName string, windows map[*Bridge]*[numResKinds]Range) [numResKinds][]request {
	var out [numResKinds][]request
	for s := range b.fns {
		for fn, f := range b.fns[s] {
			if f == nil {
				continue
			}
			c := f.PCIConfig()
			name := fmt.Sprintf("%s:%02x.%d", busName, s, fn)
			c.mu.Lock()
			for _, bs := range c.bars {
				if bs == nil {
					continue
				}
				out[kindOf(bs.BAR)] = append(out[kindOf(bs.BAR)], request{
					size: bs.Size, align: bs.Size, what: fmt.Sprintf("%s BAR %d (%s, %#x bytes)", name, bs.index, bs.Kind, bs.Size),
					assign: func(base uint64) { writeBAR(c, bs, base) },
				})
			}
			c.mu.Unlock()
			br, ok := f.(*Bridge)
			if !ok {
				continue
			}
			st := br.state()
			inner := r.requests(br.secondary, fmt.Sprintf("%02x", st.secondary), windows)
			w := &[numResKinds]Range{}
			for k := range numResKinds {
				w[k] = Range{Start: 1} // closed
			}
			windows[br] = w
			for k := range numResKinds {
				reqs := inner[k]
				if len(reqs) == 0 {
					continue
				}
				sortRequests(reqs)
				offs := make([]uint64, len(reqs))
				var end, align uint64 = 0, windowGranularity[k]
				for i, q := range reqs {
					end = alignUp(end, q.align)
					offs[i] = end
					end += q.size
					align = max(align, q.align)
				}
				size := alignUp(end, windowGranularity[k])
				out[k] = append(out[k], request{
					size: size, align: align, what: fmt.Sprintf("%s %s window (%#x bytes)", name, resNames[k], size),
					assign: func(base uint64) {
						w[k] = Range{Start: base, End: base + size - 1}
						for i, q := range reqs {
							q.assign(base + offs[i])
						}
					},
				})
			}
		}
	}
	return out
}

// sortRequests orders by decreasing alignment (then size), which packs
// power-of-two BARs without holes.
func sortRequests(reqs []request) {
	sort.SliceStable(reqs, func(i, j int) bool {
		if reqs[i].align != reqs[j].align {
			return reqs[i].align > reqs[j].align
		}
		return reqs[i].size > reqs[j].size
	})
}

// writeBAR programs a BAR's address through configuration writes.
func writeBAR(c *Config, bs *barState, base uint64) {
	off := RegBAR0 + 4*bs.index
	c.write32(off, uint32(base))
	if bs.Kind == BARMem64 {
		c.write32(off+4, uint32(base>>32))
	}
}
