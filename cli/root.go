// Package cli is kvmm's command line: cobra commands, flag parsing, the
// config file, the terminal. It builds a vmm.Config and hands it over; no
// VM logic lives here.
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// ExitError carries a process exit status out of a command.
type ExitError struct {
	Status int
	Err    error // nil when the status alone says it (the guest's status)
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Status)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// Main runs kvmm with args and returns the process exit status.
func Main(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintf(stderr, "kvmm: %v\n", ee.Err)
		}
		return ee.Status
	}
	fmt.Fprintf(stderr, "kvmm: %v\n", err)
	return 1
}

type globals struct {
	stdin          *os.File
	stdout, stderr io.Writer
	logLevel       string
}

func (g *globals) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToUpper(g.logLevel))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl})), nil
}

func newRoot(stdin *os.File, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	run := newRunCmd(g)
	root := &cobra.Command{
		Use:   "kvmm",
		Short: "kvmm is a KVM virtual machine monitor",
		Long: "kvmm boots Linux guests (bzImage or PVH vmlinux) on /dev/kvm.\n" +
			"With no command it boots its built-in self-test guest.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return run.RunE(run, nil)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	root.AddCommand(run, newTestCmd(g), newCtlCmd(g), newVersionCmd(g))
	return root
}

// Version is set at build time with -ldflags "-X github.com/kvmm/kvmm/cli.Version=...".
var Version = "dev"

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the kvmm version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(g.stdout, "kvmm", Version)
			return nil
		},
	}
}
