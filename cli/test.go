package cli

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvmm/kvmm/vmm"
)

func newTestCmd(g *globals) *cobra.Command {
	var (
		f            vmFlags
		timeout      time.Duration
		expectStatus int
		expect       []string
		reject       []string
		quiet        bool
	)
	cmd := &cobra.Command{
		Use:   "test",
		Short: "Boot a guest headless and check how it ends",
		Long: "Boot a VM without a terminal, wait for it to end (or --timeout), and check\n" +
			"its exit status and serial output. Prints one verdict line; exits 0 when\n" +
			"every check passed, 1 otherwise. Made for test suites and CI.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.config(cmd)
			if err != nil {
				return &ExitError{Status: 1, Err: err}
			}
			var want, deny []*regexp.Regexp
			for _, group := range []struct {
				src []string
				dst *[]*regexp.Regexp
			}{{expect, &want}, {reject, &deny}} {
				for _, e := range group.src {
					re, err := regexp.Compile(e)
					if err != nil {
						return &ExitError{Status: 1, Err: fmt.Errorf("pattern %q: %w", e, err)}
					}
					*group.dst = append(*group.dst, re)
				}
			}
			log, err := g.logger()
			if err != nil {
				return &ExitError{Status: 1, Err: err}
			}
			var out vmm.SerialBuffer
			var serial io.Writer = &out
			if !quiet {
				serial = io.MultiWriter(&out, g.stdout)
			}
			vm, err := vmm.New(cfg, vmm.Options{Serial: serial, Logger: log})
			if err != nil {
				return &ExitError{Status: 1, Err: err}
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			res, runErr := vm.Run(ctx)
			elapsed := time.Since(start)
			var problems []string
			if runErr != nil {
				problems = append(problems, fmt.Sprintf("timed out after %s", timeout))
			} else if res.Status != expectStatus {
				problems = append(problems, fmt.Sprintf("exit status %d (%s), want %d", res.Status, res.Reason, expectStatus))
			}
			text := out.String()
			for _, re := range want {
				if !re.MatchString(text) {
					problems = append(problems, fmt.Sprintf("output lacks /%s/", re))
				}
			}
			for _, re := range deny {
				if re.MatchString(text) {
					problems = append(problems, fmt.Sprintf("output has /%s/", re))
				}
			}
			if len(problems) == 0 {
				fmt.Fprintf(g.stderr, "kvmm test: PASS (status %d, %s)\n", res.Status, elapsed.Round(time.Millisecond))
				return nil
			}
			for _, p := range problems {
				fmt.Fprintf(g.stderr, "kvmm test: FAIL: %s\n", p)
			}
			return &ExitError{Status: 1}
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "stop the VM and fail after this long")
	cmd.Flags().IntVar(&expectStatus, "expect-status", 0, "exit status the guest must end with")
	cmd.Flags().StringArrayVar(&expect, "expect", nil, "regular expression the serial output must match (repeatable)")
	cmd.Flags().StringArrayVar(&reject, "reject", nil, "regular expression the serial output must not match (repeatable)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "do not copy the serial output to stdout")
	return cmd
}
