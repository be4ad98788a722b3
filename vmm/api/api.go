// Package api is kvmm's REST API: JSON over HTTP/1.1 on a unix socket, one
// socket per VM. The server drives a running VM (state, pause and resume,
// power actions, metrics, an event stream); the client is what `kvmm ctl`
// and a control plane written in Go use. openapi.yaml, embedded here and
// served at GET /openapi.yaml, is the contract.
//
//	srv := api.NewServer(vm, api.Options{Logger: log})
//	if err := srv.Start("/run/kvmm/vm1.sock"); err != nil { ... }
//	defer srv.Close()
//
//	c := api.NewClient("/run/kvmm/vm1.sock")
//	info, err := c.VM(ctx)
package api

import (
	"io"
	"time"

	"github.com/kvmm/kvmm/vmm"
)

// VMController is what the server needs from a VM. *vmm.VM implements it
// (see vm.go); tests use a fake so that no handler test needs KVM.
type VMController interface {
	State() vmm.State
	Config() vmm.Config
	Uptime() time.Duration
	Pause() (time.Duration, error)
	Resume() (time.Duration, error)
	// Wake ends an ACPI S3 sleep (suspended -> running).
	Wake() (time.Duration, error)
	PowerButton() error
	HostReset() error
	Stop(reason string)
	Metrics(top int) vmm.Metrics
	// PCIDump writes the configuration spaces in `lspci -x` format.
	PCIDump(w io.Writer, extended bool) error
	// BalloonStats and SetBalloonTarget are the memory balloon (errors
	// wrap vmm.ErrNoBalloon without one, balloon.ErrTarget for a target
	// out of range, vmm.ErrState on a stopped VM).
	BalloonStats() (vmm.BalloonStats, error)
	SetBalloonTarget(bytes uint64) (vmm.BalloonStats, error)
	Subscribe() (<-chan vmm.Event, func())
	Done() <-chan struct{}
}

// VMInfo is the body of GET /vm.
type VMInfo struct {
	State vmm.State `json:"state"`
	// UptimeNS is the time since the VM started, in nanoseconds (0 before).
	UptimeNS time.Duration `json:"uptime_ns"`
	// Uptime is UptimeNS for humans, e.g. "1m2.5s".
	Uptime      string     `json:"uptime"`
	VCPUs       int        `json:"vcpus"`
	MemoryBytes uint64     `json:"memory_bytes"`
	Config      vmm.Config `json:"config"`
}

// StateRequest is the body of PUT /vm/state.
type StateRequest struct {
	// State is the wanted state: "running" or "paused".
	State vmm.State `json:"state"`
}

// StateResponse answers PUT /vm/state.
type StateResponse struct {
	// State is the state reached.
	State vmm.State `json:"state"`
	// Previous is the state the request started from.
	Previous vmm.State `json:"previous"`
	// TookNS is how long the transition took (all vCPUs parked or
	// released), in nanoseconds; Took is the same for humans.
	TookNS time.Duration `json:"took_ns"`
	Took   string        `json:"took"`
}

// PowerAction is what PUT /vm/power does.
type PowerAction string

const (
	// PowerButton presses the ACPI power button (an SCI with PWRBTN_STS);
	// a guest with an ACPI button driver shuts down cleanly.
	PowerButton PowerAction = "button"
	// PowerReset is a hardware reset: the guest reboots.
	PowerReset PowerAction = "reset"
	// PowerShutdown is a hard stop: the VM ends at once, as if unplugged.
	PowerShutdown PowerAction = "shutdown"
)

// PowerRequest is the body of PUT /vm/power.
type PowerRequest struct {
	Action PowerAction `json:"action"`
}

// PowerResponse answers PUT /vm/power. The action is asynchronous: the
// event stream says when the VM has stopped or rebooted.
type PowerResponse struct {
	Action PowerAction `json:"action"`
	// State is the VM's state right after the request was made.
	State vmm.State `json:"state"`
}

// BalloonRequest is the body of PUT /vm/balloon.
type BalloonRequest struct {
	// Target is the balloon size: how much memory the guest's balloon
	// driver should take from the guest and give back to the host, as
	// "256M" or a byte count; 0 gives it all back to the guest. It is not
	// the memory the guest keeps (vmw_balloon's GET_TARGET meaning).
	Target *vmm.Size `json:"target"`
}

// ErrorResponse is the body of every 4xx and 5xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
}
