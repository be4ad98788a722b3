package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kvmm/kvmm/devices"
	"github.com/kvmm/kvmm/vmm"
	"github.com/kvmm/kvmm/vmm/api"
)

// ctlOptions are the flags every `kvmm ctl` subcommand shares.
type ctlOptions struct {
	g       *globals
	sock    string
	output  string
	timeout time.Duration
}

const (
	outputText = "text"
	outputJSON = "json"
	// defaultCtlTimeout bounds one request; a pause waits for every vCPU
	// to leave KVM_RUN, which is quick, but a wedged VMM must not hang a
	// script forever.
	defaultCtlTimeout = 30 * time.Second
)

// ctlSpec describes one subcommand. Adding a subcommand is one more spec
// in ctlSubcommands (plus a flag or two, if it has any).
type ctlSpec struct {
	use, short, long string
	// args checks the positional arguments (nil: none allowed).
	args func(args []string) error
	// flags registers the subcommand's own flags (nil: none).
	flags func(fs *pflag.FlagSet)
	// stream marks a command that runs until the VM stops (no --timeout).
	stream bool
	run    func(ctx context.Context, x *ctlRun, args []string) error
}

// ctlRun is what a subcommand's run gets: the client and the output.
type ctlRun struct {
	client *api.Client
	out    io.Writer
	json   bool
}

// show prints one answer: indented JSON with -o json, else text's output.
func (x *ctlRun) show(v any, text func(w io.Writer)) error {
	if x.json {
		enc := json.NewEncoder(x.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text(x.out)
	return nil
}

func newCtlCmd(g *globals) *cobra.Command {
	o := &ctlOptions{g: g}
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Control a running VM through its API socket",
		Long: "Control a VM started with `kvmm run --api-sock PATH` through its REST API.\n" +
			"Output is human-readable, or the API's JSON with -o json. Errors are printed\n" +
			"as \"kvmm ctl: <error>\" and the exit status is 1.",
		Example: "  kvmm ctl --sock /run/kvmm/vm1.sock status\n" +
			"  kvmm ctl --sock /run/kvmm/vm1.sock pause\n" +
			"  kvmm ctl --sock /run/kvmm/vm1.sock power button\n" +
			"  kvmm ctl --sock /run/kvmm/vm1.sock events -o json",
		Args: cobra.ArbitraryArgs,
		// Without a subcommand cobra would run this with the unknown word
		// as an argument: say so instead of printing help with status 0.
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return o.fail(fmt.Errorf("unknown command %q (see kvmm ctl --help)", args[0]))
			}
			return cmd.Help()
		},
	}
	fs := cmd.PersistentFlags()
	fs.StringVarP(&o.sock, "sock", "s", "", "the VM's API socket (kvmm run --api-sock)")
	fs.StringVarP(&o.output, "output", "o", outputText, "output format: text or json")
	fs.DurationVar(&o.timeout, "timeout", defaultCtlTimeout, "how long to wait for an answer (not for events)")
	for _, spec := range ctlSubcommands() {
		cmd.AddCommand(o.command(spec))
	}
	return cmd
}

// ctlSubcommands lists the subcommands. Flag values live in this call's
// variables, one set per command tree.
func ctlSubcommands() []ctlSpec {
	var (
		top      int
		until    string
		extended bool
	)
	return []ctlSpec{
		{use: "status", short: "Show the VM's state, uptime, vCPUs and memory", run: ctlStatus},
		{use: "pause", short: "Pause every vCPU", run: ctlSetState(vmm.StatePaused)},
		{use: "resume", short: "Resume a paused VM", run: ctlSetState(vmm.StateRunning)},
		{use: "wake", short: "Wake a VM suspended to RAM (ACPI S3)", run: ctlSetState(vmm.StateRunning)},
		{
			use:   "power button|reset|shutdown",
			short: "Press the ACPI power button, reset, or hard-stop the VM",
			long: "button: press the ACPI power button; a guest with an ACPI button driver shuts\n" +
				"down cleanly. reset: a hardware reset, the guest reboots. shutdown: stop the VM\n" +
				"at once (exit status 130). All three return at once; `kvmm ctl events` shows\n" +
				"when the VM has stopped.",
			args: ctlOneOf(string(api.PowerButton), string(api.PowerReset), string(api.PowerShutdown)),
			run:  ctlPower,
		},
		{
			use:   "pci",
			short: "Dump every PCI function's configuration space (lspci -x format)",
			long: "Print the configuration spaces in the text format of `lspci -x`, so that\n" +
				"`kvmm ctl pci > dump; lspci -F dump -vvv` decodes them on the host.",
			flags: func(fs *pflag.FlagSet) {
				fs.BoolVarP(&extended, "extended", "x", false, "4 KiB per function, as lspci -xxxx")
			},
			run: func(ctx context.Context, x *ctlRun, _ []string) error {
				dump, err := x.client.PCIDump(ctx, extended)
				if err != nil {
					return err
				}
				return x.show(map[string]string{"dump": dump}, func(w io.Writer) { fmt.Fprint(w, dump) })
			},
		},
		ctlBalloonSpec(), // ctlballoon.go
		{
			use:   "metrics",
			short: "Show exit counters, vCPU run time and device accesses",
			flags: func(fs *pflag.FlagSet) {
				fs.IntVar(&top, "top", 0, "show only the N busiest I/O port and MMIO ranges (0: all)")
			},
			run: func(ctx context.Context, x *ctlRun, _ []string) error { return ctlMetrics(ctx, x, top) },
		},
		{
			use:   "events",
			short: "Print state changes and guest events as they happen",
			long: "Print the VM's current state, then every state change and guest event, until\n" +
				"the VM stops or, with --until, until it reaches that state (e.g. suspended).\n" +
				"With -o json, one JSON object per line.",
			flags: func(fs *pflag.FlagSet) {
				fs.StringVar(&until, "until", "", "stop after the VM reaches this state: running, paused, suspended or stopped")
			},
			stream: true,
			run: func(ctx context.Context, x *ctlRun, _ []string) error {
				return ctlEvents(ctx, x, vmm.State(until))
			},
		},
	}
}

// command builds the cobra command for spec: argument checks, the client,
// the timeout and Ctrl-C, and the error format.
func (o *ctlOptions) command(spec ctlSpec) *cobra.Command {
	name, _, _ := strings.Cut(spec.use, " ")
	cmd := &cobra.Command{
		Use:   spec.use,
		Short: spec.short,
		Long:  spec.long,
		Args: func(cmd *cobra.Command, args []string) error {
			check := spec.args
			if check == nil {
				check = ctlNoArgs
			}
			if err := check(args); err != nil {
				return o.fail(fmt.Errorf("%s: %w", name, err))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.sock == "" {
				return o.fail(errors.New("--sock is required: the VM's API socket (kvmm run --api-sock)"))
			}
			if o.output != outputText && o.output != outputJSON {
				return o.fail(fmt.Errorf("-o %q: want text or json", o.output))
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if !spec.stream && o.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, o.timeout)
				defer cancel()
			}
			client := api.NewClient(o.sock)
			defer client.Close()
			x := &ctlRun{client: client, out: o.g.stdout, json: o.output == outputJSON}
			if err := spec.run(ctx, x, args); err != nil {
				return o.fail(err)
			}
			return nil
		},
	}
	if spec.flags != nil {
		spec.flags(cmd.Flags())
	}
	return cmd
}

// fail prints err the way ctl reports every error and makes the exit
// status 1 (Main prints nothing more for an ExitError without Err).
func (o *ctlOptions) fail(err error) error {
	fmt.Fprintf(o.g.stderr, "kvmm ctl: %v\n", err)
	return &ExitError{Status: 1}
}

func ctlNoArgs(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected argument %q", args[0])
	}
	return nil
}

func ctlOneOf(words ...string) func([]string) error {
	return func(args []string) error {
		if len(args) != 1 || !slices.Contains(words, args[0]) {
			return fmt.Errorf("want one of %s", strings.Join(words, ", "))
		}
		return nil
	}
}

func ctlStatus(ctx context.Context, x *ctlRun, _ []string) error {
	info, err := x.client.VM(ctx)
	if err != nil {
		return err
	}
	return x.show(info, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		kernel := info.Config.Kernel
		if kernel == "" {
			kernel = "(built-in self-test guest)"
		}
		fmt.Fprintf(tw, "state\t%s\n", info.State)
		fmt.Fprintf(tw, "uptime\t%s\n", info.Uptime)
		fmt.Fprintf(tw, "vcpus\t%d\n", info.VCPUs)
		fmt.Fprintf(tw, "memory\t%s\n", vmm.Size(info.MemoryBytes))
		fmt.Fprintf(tw, "kernel\t%s\n", kernel)
		if info.Config.Initrd != "" {
			fmt.Fprintf(tw, "initrd\t%s\n", info.Config.Initrd)
		}
		fmt.Fprintf(tw, "cmdline\t%s\n", info.Config.Cmdline)
		tw.Flush()
	})
}

// ctlSetState is pause and resume (and, later, wake).
func ctlSetState(want vmm.State) func(context.Context, *ctlRun, []string) error {
	return func(ctx context.Context, x *ctlRun, _ []string) error {
		r, err := x.client.SetState(ctx, want)
		if err != nil {
			return err
		}
		return x.show(r, func(w io.Writer) { fmt.Fprintf(w, "%s (took %s)\n", r.State, r.Took) })
	}
}

func ctlPower(ctx context.Context, x *ctlRun, args []string) error {
	r, err := x.client.Power(ctx, api.PowerAction(args[0]))
	if err != nil {
		return err
	}
	return x.show(r, func(w io.Writer) {
		switch r.Action {
		case api.PowerButton:
			fmt.Fprintf(w, "power button pressed (VM is %s)\n", r.State)
		case api.PowerReset:
			fmt.Fprintf(w, "reset (VM is %s)\n", r.State)
		default:
			fmt.Fprintf(w, "%s (VM is %s)\n", r.Action, r.State)
		}
	})
}

func ctlMetrics(ctx context.Context, x *ctlRun, top int) error {
	if top < 0 {
		return fmt.Errorf("--top %d: want a count >= 0", top)
	}
	m, err := x.client.Metrics(ctx, top)
	if err != nil {
		return err
	}
	return x.show(m, func(w io.Writer) { printMetrics(w, m) })
}

func printMetrics(w io.Writer, m vmm.Metrics) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "uptime\t%s\n", m.Uptime.Round(time.Millisecond))
	fmt.Fprintf(tw, "reboots\t%d\n", m.Reboots)
	fmt.Fprintf(tw, "\nEXIT REASON\tCOUNT\n")
	for _, k := range sortedByCount(m.Exits) {
		fmt.Fprintf(tw, "%s\t%d\n", k, m.Exits[k])
	}
	fmt.Fprintf(tw, "\nVCPU\tRUN TIME\tEXITS\n")
	for _, v := range m.VCPUs {
		var n uint64
		for _, c := range v.Exits {
			n += c
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\n", v.ID, v.RunTime.Round(time.Microsecond), n)
	}
	for _, bus := range []struct {
		name   string
		ranges []devices.RangeStats
	}{{"I/O PORTS", m.PIO}, {"MMIO", m.MMIO}} {
		fmt.Fprintf(tw, "\n%s\tDEVICE\tACCESSES\n", bus.name)
		if len(bus.ranges) == 0 {
			fmt.Fprintf(tw, "(none)\n")
		}
		for _, r := range bus.ranges {
			fmt.Fprintf(tw, "%#x-%#x\t%s\t%d\n", r.Base, r.Base+max(r.Size, 1)-1, r.Name, r.Accesses)
		}
	}
	tw.Flush()
}

// sortedByCount returns the keys of m, largest count first.
func sortedByCount(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}

func ctlEvents(ctx context.Context, x *ctlRun, until vmm.State) error {
	switch until {
	case "", vmm.StateRunning, vmm.StatePaused, vmm.StateSuspended, vmm.StateStopped:
	default:
		return fmt.Errorf("--until %q: want running, paused, suspended or stopped", until)
	}
	stream, err := x.client.Events(ctx)
	if err != nil {
		return err
	}
	defer stream.Close()
	enc := json.NewEncoder(x.out) // one compact object per line
	for {
		e, err := stream.Next()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil && ctx.Err() != nil:
			return nil // Ctrl-C: the user is done watching
		case err != nil:
			return err
		}
		if x.json {
			if err := enc.Encode(e); err != nil {
				return err
			}
		} else {
			fmt.Fprintln(x.out, formatEvent(e))
		}
		if until != "" && e.Type == "state" && e.State == until {
			return nil
		}
	}
}

// formatEvent renders an event as one line: time, type, state, exit
// status, then the detail after a colon.
func formatEvent(e vmm.Event) string {
	var b strings.Builder
	b.WriteString(e.Time.Local().Format("15:04:05.000"))
	b.WriteString(" " + e.Type)
	if e.State != "" {
		b.WriteString(" " + string(e.State))
	}
	if e.Status != nil {
		fmt.Fprintf(&b, " status=%d", *e.Status)
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	return b.String()
}
