package bench

// System is one of the VMMs a benchmark compares.
type System string

// The systems, in the order of the report's columns.
const (
	KVMM  System = "kvmm"
	QEMU  System = "qemu"
	Floor System = "floor"
)

// Systems returns every system in column order.
func Systems() []System { return []System{KVMM, QEMU, Floor} }

// Header is the system's column title.
func (s System) Header() string {
	switch s {
	case KVMM:
		return "kvmm"
	case QEMU:
		return "QEMU microvm"
	case Floor:
		return "floor"
	}
	return string(s)
}

// Trial is one measurement: the round it belongs to and the system run.
type Trial struct {
	Round  int
	System System
}

// Schedule lists the trials of rounds rounds over systems. Every round
// measures each system once, and the order rotates by one place a round
// (A B C, B C A, C A B, ...), so that over len(systems) rounds each system
// runs first, second and last equally often and a burst of load on the
// machine falls on all of them alike rather than on whichever always runs
// in its slot.
func Schedule(systems []System, rounds int) []Trial {
	if len(systems) == 0 || rounds <= 0 {
		return nil
	}
	trials := make([]Trial, 0, len(systems)*rounds)
	for r := 0; r < rounds; r++ {
		for i := range systems {
			trials = append(trials, Trial{Round: r, System: systems[(r+i)%len(systems)]})
		}
	}
	return trials
}
