package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kvmm/kvmm/vmm"
	"github.com/kvmm/kvmm/vmm/api"
)

func newRunCmd(g *globals) *cobra.Command {
	var (
		f       vmFlags
		apiSock string
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Boot a VM and attach its serial console to this terminal",
		Long: "Boot a VM. Its COM1 serial console is this terminal (raw mode when stdin\n" +
			"is a terminal; Ctrl-A x quits). kvmm exits with the guest's status: 0 on\n" +
			"poweroff, (v<<1)|1 when the guest writes v to the debug-exit port 0xf4,\n" +
			"124 on a triple fault (with --on-reboot exit), 125 on a KVM internal error.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.config(cmd)
			if err != nil {
				return &ExitError{Status: 1, Err: err}
			}
			log, err := g.logger()
			if err != nil {
				return &ExitError{Status: 1, Err: err}
			}
			// Signals are taken before New: it creates taps and macvtaps,
			// and a SIGTERM then must stop the VM, whose end removes them
			// (vmm's VM.finish), rather than kill the process with them.
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			vm, err := vmm.New(cfg, vmm.Options{Serial: g.stdout, Logger: log})
			if err != nil {
				return &ExitError{Status: 1, Err: err}
			}
			if apiSock != "" {
				srv := api.NewServer(vm, api.Options{Logger: log})
				if err := srv.Start(apiSock); err != nil {
					vm.Stop("API socket unavailable")
					return &ExitError{Status: 1, Err: err}
				}
				// Deferred so it runs after the VM ended: event streams
				// deliver the stopped event before the socket goes away.
				defer func() {
					if err := srv.Close(); err != nil {
						log.Warn("closing the API socket", "err", err)
					}
				}()
			}
			restore := attachConsole(g.stdin, vm)
			res, err := vm.Run(ctx)
			restore()
			if err != nil {
				// A signal (ctx) still leaves a result; a VM stopped through
				// the API before Start has its own.
				r, ok := vm.Result()
				if !ok {
					return &ExitError{Status: 1, Err: err}
				}
				res = r
			}
			return resultError(res)
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVar(&apiSock, "api-sock", "", "serve the REST API on this unix socket (see kvmm ctl)")
	return cmd
}

// resultError turns a VM result into the process exit.
func resultError(res vmm.Result) error {
	if res.Status == 0 {
		return nil
	}
	switch res.Status {
	case vmm.StatusVMMError, vmm.StatusTripleFault, vmm.StatusInternalError, vmm.StatusStopped:
		return &ExitError{Status: res.Status, Err: fmt.Errorf("%s", res.Reason)}
	}
	return &ExitError{Status: res.Status}
}
