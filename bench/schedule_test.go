package bench

import (
	"reflect"
	"testing"
)

func TestScheduleRotates(t *testing.T) {
	got := Schedule([]System{KVMM, QEMU, Floor}, 4)
	want := []Trial{
		{0, KVMM}, {0, QEMU}, {0, Floor},
		{1, QEMU}, {1, Floor}, {1, KVMM},
		{2, Floor}, {2, KVMM}, {2, QEMU},
		{3, KVMM}, {3, QEMU}, {3, Floor},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Schedule = %v\nwant       %v", got, want)
	}
}

// Over a multiple of len(systems) rounds every system holds every position
// in a round equally often, and each round measures each system once.
func TestScheduleIsBalanced(t *testing.T) {
	systems := []System{KVMM, QEMU, Floor}
	rounds := 3 * len(systems)
	trials := Schedule(systems, rounds)
	if len(trials) != rounds*len(systems) {
		t.Fatalf("%d trials, want %d", len(trials), rounds*len(systems))
	}
	position := map[System]map[int]int{}
	for i, tr := range trials {
		if tr.Round != i/len(systems) {
			t.Fatalf("trial %d in round %d, want %d", i, tr.Round, i/len(systems))
		}
		if position[tr.System] == nil {
			position[tr.System] = map[int]int{}
		}
		position[tr.System][i%len(systems)]++
	}
	for r := 0; r < rounds; r++ {
		seen := map[System]bool{}
		for _, tr := range trials[r*len(systems) : (r+1)*len(systems)] {
			if seen[tr.System] {
				t.Errorf("round %d measures %s twice", r, tr.System)
			}
			seen[tr.System] = true
		}
	}
	for _, s := range systems {
		for p := 0; p < len(systems); p++ {
			if got := position[s][p]; got != rounds/len(systems) {
				t.Errorf("%s ran in position %d %d times, want %d", s, p, got, rounds/len(systems))
			}
		}
	}
}

func TestScheduleEmpty(t *testing.T) {
	if got := Schedule(nil, 3); got != nil {
		t.Errorf("no systems: %v", got)
	}
	if got := Schedule([]System{KVMM}, 0); got != nil {
		t.Errorf("no rounds: %v", got)
	}
}
