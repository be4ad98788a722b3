package cli

import (
	"strings"
	"testing"

	"github.com/kvmm/kvmm/vmm"
)

func TestCtlBalloon(t *testing.T) {
	vm, sock := serveFake(t)
	vm.EnableBalloon()

	out := ctl(t, sock, "balloon", "set", "64M")
	if want := "balloon target 64M: the guest's balloon driver will take 64M from the guest for the host (it holds 64M now)\n"; out != want {
		t.Errorf("set 64M: %q, want %q", out, want)
	}
	st := jsonInto[vmm.BalloonStats](t, ctl(t, sock, "balloon", "set", "32M", "-o", "json"))
	if st.TargetBytes != 32<<20 || st.Kind != "vmware" {
		t.Errorf("set -o json: %+v", st)
	}
	out = ctl(t, sock, "balloon", "stats")
	for _, want := range []string{
		"kind        vmware\n",
		"target      32M (balloon size: memory to take from the guest)\n",
		"held        32M (4K pages: 0, 2M pages: 16)\n",
		"given back  64M (host memory released, total)\n",
		"driver      negotiated, capabilities 0x2e (basic, batched, batched-2M, 64-bit-target), guest id 1, starts 1, resets 0\n",
		"get_target",
		"REFUSED",
		"(none)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stats output lacks %q:\n%s", want, out)
		}
	}
	st = jsonInto[vmm.BalloonStats](t, ctl(t, sock, "balloon", "stats", "-o", "json"))
	if st.HeldBytes != 32<<20 || st.VMware == nil || st.VMware.Capabilities != 0x2e {
		t.Errorf("stats -o json: %+v", st)
	}
	if out := ctl(t, sock, "balloon", "set", "0"); !strings.Contains(out, "balloon target 0: the guest's balloon driver will give back all it holds") {
		t.Errorf("set 0: %q", out)
	}
}

func TestCtlBalloonErrors(t *testing.T) {
	vm, sock := serveFake(t)
	_, plain := serveFake(t) // no balloon
	vm.EnableBalloon()
	for _, tc := range []struct {
		name string
		args []string
		want string // stderr after "kvmm ctl: "
	}{
		{"no subcommand", []string{"--sock", sock, "balloon"}, "balloon: want `balloon set SIZE` or `balloon stats`"},
		{"set without size", []string{"--sock", sock, "balloon", "set"}, "balloon: set needs the balloon size, e.g. `balloon set 256M` (0 empties it)"},
		{"bad size", []string{"--sock", sock, "balloon", "set", "lots"}, `balloon: set: size "lots": want a number with an optional K, M, G or T suffix`},
		{"not 4K", []string{"--sock", sock, "balloon", "set", "1K"}, "invalid balloon target: 1024 bytes is not a whole number of 4 KiB pages"},
		{"too big", []string{"--sock", sock, "balloon", "set", "1G"}, "invalid balloon target: 1 GiB is more than the guest's 128 MiB of RAM"},
		{"extra", []string{"--sock", sock, "balloon", "stats", "now"}, "balloon: want `balloon set SIZE` or `balloon stats`"},
		{"no balloon", []string{"--sock", plain, "balloon", "stats"}, "the VM has no memory balloon (personality kvm)"},
		{"no balloon set", []string{"--sock", plain, "balloon", "set", "16M"}, "the VM has no memory balloon (personality kvm)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, out, errOut := kvmm(t, append([]string{"ctl"}, tc.args...)...)
			if status != 1 || out != "" {
				t.Errorf("exit status %d, stdout %q; want 1 and nothing", status, out)
			}
			if want := "kvmm ctl: " + tc.want + "\n"; errOut != want {
				t.Errorf("stderr %q, want %q", errOut, want)
			}
		})
	}
}
