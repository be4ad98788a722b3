package pci

import (
	"fmt"

	"github.com/kvmm/kvmm/devices"
)

// placement is where one BAR region should be mapped now.
type placement struct {
	bus  *devices.Bus
	base uint64
	name string
}

// remap brings every BAR region's mapping on the PIO/MMIO buses in line
// with the configuration registers: a region is mapped when its function
// decodes that space (command register), the BAR holds a usable address,
// and every bridge above it forwards the range (command register and
// windows). A moved BAR is removed and inserted again; an overlap with
// something already mapped leaves the region unmapped and is logged once
// per address. Called with r.mu held after every header write.
func (r *Root) remap() {
	var all []*regionState
	want := map[*regionState]placement{}
	var rec func(b *Bus, busNum uint8, path []bridgeState)
	rec = func(b *Bus, busNum uint8, path []bridgeState) {
		for s := range b.fns {
			for fn, f := range b.fns[s] {
				if f == nil {
					continue
				}
				c := f.PCIConfig()
				c.mu.Lock()
				cmd := c.u16(RegCommand)
				for _, bs := range c.bars {
					if bs == nil {
						continue
					}
					io := bs.Kind == BARIO
					addr, ok := c.barAddress(bs)
					on := ok && ((io && cmd&CmdIO != 0) || (!io && cmd&CmdMemory != 0))
					for _, st := range path {
						on = on && st.forwards(io, addr, bs.Size)
					}
					bus := r.mmio
					if io {
						bus = r.pio
					}
					bs.decoding, bs.at = on, addr
					for k := range bs.regions {
						rs := &bs.regions[k]
						all = append(all, rs)
						if on {
							want[rs] = placement{bus: bus, base: addr + rs.Offset,
								name: fmt.Sprintf("pci %02x:%02x.%d bar%d %s", busNum, s, fn, bs.index, rs.Name)}
						}
					}
				}
				c.mu.Unlock()
				if br, ok := f.(*Bridge); ok {
					st := br.state()
					rec(br.secondary, st.secondary, append(path[:len(path):len(path)], st))
				}
			}
		}
	}
	rec(r.bus0, 0, nil)

	// Removals first, so that two BARs may trade places.
	for _, rs := range all {
		p, ok := want[rs]
		if !rs.mapped || (ok && p.base == rs.at && p.bus == rs.on) {
			continue
		}
		if err := rs.on.Remove(rs.at); err != nil {
			r.log.Warn("PCI: unmapping BAR region", "region", rs.Name, "err", err)
		}
		rs.mapped = false
		if rs.Mapped != nil {
			rs.Mapped(rs.at, false)
		}
	}
	for _, rs := range all {
		p, ok := want[rs]
		if !ok {
			rs.refusedSet = false
			continue
		}
		if rs.mapped {
			continue
		}
		if err := p.bus.Insert(p.base, rs.Size, p.name, rs.Dev); err != nil {
			if !rs.refusedSet || rs.refused != p.base {
				r.log.Warn("PCI: BAR region left unmapped", "region", p.name, "addr", fmt.Sprintf("%#x", p.base), "err", err)
			}
			rs.refused, rs.refusedSet = p.base, true
			continue
		}
		rs.mapped, rs.at, rs.on, rs.refusedSet = true, p.base, p.bus, false
		if rs.Mapped != nil {
			rs.Mapped(p.base, true)
		}
	}
}

// BARAddress reports where BAR i of f decodes now; false while it does not
// (decoding disabled, unassigned, or not forwarded by a bridge).
func (r *Root) BARAddress(f Function, i int) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := f.PCIConfig()
	if i < 0 || i >= len(c.bars) || c.bars[i] == nil {
		return 0, false
	}
	return c.bars[i].at, c.bars[i].decoding
}
