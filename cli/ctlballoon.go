package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kvmm/kvmm/balloon"
	virtioballoon "github.com/kvmm/kvmm/devices/virtio/balloon"
	"github.com/kvmm/kvmm/vmm"
)

// ctlBalloonSpec is `kvmm ctl balloon set SIZE` and `kvmm ctl balloon
// stats`.
func ctlBalloonSpec() ctlSpec {
	return ctlSpec{
		use:   "balloon set SIZE|stats",
		short: "Set the memory balloon's size, or show what it holds and gave back",
		long: "set SIZE: how much memory the guest's balloon driver should take from the\n" +
			"guest and give back to the host, e.g. 256M (a multiple of 4K, at most the\n" +
			"guest's RAM). It is the balloon's size, NOT the memory the guest keeps: a 1G\n" +
			"guest with `balloon set 256M` keeps 768M. `balloon set 0` gives it all back.\n" +
			"The driver (Linux's vmw_balloon, personality vmware) polls about once a\n" +
			"second; virtio-balloon's (--balloon virtio) is told at once. `balloon stats`\n" +
			"shows it follow.\n" +
			"stats: the target, the pages the balloon holds (4K and 2M), the host memory\n" +
			"given back, the commands the driver sent and the requests refused; with\n" +
			"virtio-balloon also the guest's free and available memory (fresh from the\n" +
			"guest, which gets up to a second to answer) and free page reporting.",
		args: ctlBalloonArgs,
		run:  ctlBalloon,
	}
}

func ctlBalloonArgs(args []string) error {
	switch {
	case len(args) == 2 && args[0] == "set":
		if _, err := vmm.ParseSize(args[1]); err != nil {
			return fmt.Errorf("set: %w", err)
		}
		return nil
	case len(args) == 1 && args[0] == "stats":
		return nil
	case len(args) == 1 && args[0] == "set":
		return errors.New("set needs the balloon size, e.g. `balloon set 256M` (0 empties it)")
	}
	return errors.New("want `balloon set SIZE` or `balloon stats`")
}

func ctlBalloon(ctx context.Context, x *ctlRun, args []string) error {
	if args[0] == "stats" {
		st, err := x.client.Balloon(ctx)
		if err != nil {
			return err
		}
		return x.show(st, func(w io.Writer) { printBalloon(w, st) })
	}
	size, _ := vmm.ParseSize(args[1]) // checked by ctlBalloonArgs
	st, err := x.client.SetBalloonTarget(ctx, size)
	if err != nil {
		return err
	}
	return x.show(st, func(w io.Writer) {
		if size == 0 {
			fmt.Fprintf(w, "balloon target 0: the guest's balloon driver will give back all it holds (%s now)\n",
				humanBytes(st.HeldBytes))
			return
		}
		fmt.Fprintf(w, "balloon target %s: the guest's balloon driver will take %s from the guest for the host (it holds %s now)\n",
			humanBytes(st.TargetBytes), humanBytes(st.TargetBytes), humanBytes(st.HeldBytes))
	})
}

func printBalloon(w io.Writer, st vmm.BalloonStats) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "kind\t%s\n", st.Kind)
	fmt.Fprintf(tw, "target\t%s (balloon size: memory to take from the guest)\n", humanBytes(st.TargetBytes))
	fmt.Fprintf(tw, "held\t%s (4K pages: %d, 2M pages: %d)\n", humanBytes(st.HeldBytes), st.Held4K, st.Held2M)
	fmt.Fprintf(tw, "given back\t%s (host memory released, total)\n", humanBytes(st.ReturnedBytes))
	if p := st.VMware; p != nil {
		state := "negotiated"
		switch {
		case p.ResetPending:
			state = "reset pending"
		case !p.Negotiated:
			state = "not started by the guest"
		}
		fmt.Fprintf(tw, "driver\t%s, capabilities %#x (%s), guest id %d, starts %d, resets %d\n",
			state, p.Capabilities, capNames(p.Capabilities), p.GuestID, p.Starts, p.Resets)
	}
	if v := st.Virtio; v != nil {
		printVirtioBalloon(tw, v)
	}
	fmt.Fprintf(tw, "\nCOMMAND\tSERVED\n")
	printCounts(tw, st.Commands)
	fmt.Fprintf(tw, "\nREFUSED\tCOUNT\n")
	printCounts(tw, st.Errors)
	tw.Flush()
}

// printCounts prints the non-zero counts, largest first, or "(none)".
func printCounts(w io.Writer, m map[string]uint64) {
	keys := make([]string, 0, len(m))
	for k, n := range m {
		if n != 0 {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	if len(keys) == 0 {
		fmt.Fprintf(w, "(none)\n")
	}
	for _, k := range keys {
		fmt.Fprintf(w, "%s\t%d\n", k, m[k])
	}
}

// printVirtioBalloon prints virtio-balloon's lines of `balloon stats`.
func printVirtioBalloon(w io.Writer, v *virtioballoon.State) {
	state := "not set up by the guest"
	if v.Active {
		state = "ready"
	}
	fmt.Fprintf(w, "driver\tvirtio-balloon %s, features %#x (%s), num_pages %d, actual %d (%s held by the guest's count)\n",
		state, v.Features, virtioFeatureNames(v.Features), v.NumPages, v.Actual, humanBytes(uint64(v.Actual)<<virtioballoon.PFNShift))
	fmt.Fprintf(w, "reported\t%s (free page reporting: %d free ranges given back, not ballooned)\n",
		humanBytes(v.ReportedBytes), v.ReportedRanges)
	g := v.GuestStats
	if g == nil {
		fmt.Fprintf(w, "guest memory\t(no statistics from the guest's driver)\n")
		return
	}
	val := func(name string, bytes bool) string {
		n, ok := g.Values[name]
		switch {
		case !ok:
			return "?"
		case bytes:
			return humanBytes(n)
		}
		return fmt.Sprint(n)
	}
	age := "fresh"
	if !g.Fresh {
		age = fmt.Sprintf("not fresh: the guest did not answer, these are %s old", time.Since(g.Updated).Round(time.Second))
	}
	fmt.Fprintf(w, "guest memory\tfree %s, available %s, total %s, disk caches %s (%s)\n",
		val("free_memory", true), val("available_memory", true), val("total_memory", true), val("disk_caches", true), age)
	fmt.Fprintf(w, "guest events\tmajor faults %s, minor faults %s, swapped in %s, swapped out %s\n",
		val("major_faults", false), val("minor_faults", false), val("swap_in", true), val("swap_out", true))
}

func virtioFeatureNames(f uint64) string {
	var names []string
	for _, b := range []struct {
		bit  uint64
		name string
	}{{virtioballoon.FeatureMustTellHost, "must-tell-host"}, {virtioballoon.FeatureStatsVQ, "stats"},
		{virtioballoon.FeatureDeflateOnOOM, "deflate-on-oom"}, {virtioballoon.FeatureFreePageHint, "free-page-hint"},
		{virtioballoon.FeaturePagePoison, "page-poison"}, {virtioballoon.FeatureReporting, "reporting"}} {
		if f&b.bit != 0 {
			names = append(names, b.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func capNames(c uint64) string {
	var names []string
	for _, b := range []struct {
		bit  uint64
		name string
	}{{balloon.CapBasic, "basic"}, {balloon.CapBatched, "batched"}, {balloon.CapBatched2M, "batched-2M"},
		{balloon.CapSignalledWakeup, "signalled-wakeup"}, {balloon.Cap64BitTarget, "64-bit-target"}} {
		if c&b.bit != 0 {
			names = append(names, b.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// humanBytes is "256M" when exact, else a MiB figure with a decimal.
func humanBytes(n uint64) string {
	if s := vmm.Size(n).String(); n == 0 || !strings.ContainsAny(s[len(s)-1:], "0123456789") {
		return s
	}
	return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
}
