package cli

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kvmm/kvmm/internal/guesttest"
	"github.com/kvmm/kvmm/internal/netnstest"
	"github.com/kvmm/kvmm/vmm"
)

func TestNetFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--net", "tap=auto,speed=10G"}, `unknown key "speed"`},
		{[]string{"run", "--net", "eth0"}, "not key=value"},
		{[]string{"run", "--net", "tap=auto,bus=1"}, "PCI bus 1 does not exist"},
		{[]string{"run", "--net", "tap=t0", "--net", "tap=t0"}, "tap t0 is already net 0's"},
		{[]string{"run", "--net", "tap=auto,mac=01:00:00:00:00:01"}, "multicast"},
	} {
		status, _, stderr := kvmm(t, tc.args...)
		if status == 0 {
			t.Errorf("%v: exit 0", tc.args)
		}
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: stderr %q does not mention %q", tc.args, stderr, tc.want)
		}
	}
}

// TestKVMMChildProcess is not a test: run by the tests below as a child
// process with KVMM_CLI_CHILD=1, it is kvmm with the arguments after "--",
// so they can send it signals.
func TestKVMMChildProcess(t *testing.T) {
	if os.Getenv("KVMM_CLI_CHILD") != "1" {
		t.Skip("the kvmm child process of TestNetSIGTERMCleanup")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(Main(args, nil, os.Stdout, os.Stderr))
}

// SIGTERM to `kvmm run` stops the VM, and its end removes what kvmm did on
// the host: the tap it created, and the bridge attachment of an existing
// tap (which would survive the process otherwise).
func TestNetSIGTERMCleanup(t *testing.T) {
	haveKVM(t)
	netnstest.Require(t)
	idle := guesttest.BuildT(t, "idle")
	netnstest.Run(t, func() {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "kvmmbr0"}}); err != nil {
			t.Fatal(err)
		}
		_, remove := netnstest.PersistentTap(t, "kvmmsg0")
		defer remove()
		master := func() int {
			l, err := netlink.LinkByName("kvmmsg0")
			if err != nil {
				t.Fatal(err)
			}
			return l.Attrs().MasterIndex
		}
		// Started from this thread: the child is in the test's namespace.
		cmd := exec.Command(os.Args[0], "-test.run=^TestKVMMChildProcess$", "--",
			"run", "--kernel", idle, "--mem", "64M", "--cmdline", "",
			"--net", "tap=kvmmsg0,bridge=kvmmbr0", "--net", "tap=kvmmsg1")
		cmd.Env = append(os.Environ(), "KVMM_CLI_CHILD=1")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "idle: ready") {
					ready <- true
					break
				}
			}
			close(ready)
			for sc.Scan() {
			}
		}()
		select {
		case ok := <-ready:
			if !ok {
				t.Fatalf("kvmm ended before the guest was ready: %v\n%s", cmd.Wait(), stderr.String())
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("the guest never got ready\n%s", stderr.String())
		}
		if master() == 0 {
			t.Error("the existing tap is not on the bridge while the VM runs")
		}
		if _, err := netlink.LinkByName("kvmmsg1"); err != nil {
			t.Errorf("the tap kvmm creates is missing: %v", err)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != vmm.StatusStopped {
			t.Errorf("kvmm after SIGTERM: %v, want exit status %d\n%s", err, vmm.StatusStopped, stderr.String())
		}
		if m := master(); m != 0 {
			t.Errorf("the existing tap is still on bridge %d after SIGTERM", m)
		}
		if _, err := netlink.LinkByName("kvmmsg1"); err == nil {
			t.Error("the tap kvmm created survived SIGTERM")
		}
	})
}
