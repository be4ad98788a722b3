package api

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvmm/kvmm/vmm"
	"github.com/kvmm/kvmm/vmm/api/apitest"
)

// shortTempDir returns a temporary directory with a short path: a unix
// socket path must fit in sun_path (108 bytes) and t.TempDir() paths that
// include long test names may not.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kvmm-api")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startServer serves vm on a socket in a fresh directory.
func startServer(t *testing.T, vm VMController) (*Server, string) {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "vm.sock")
	srv := NewServer(vm, Options{Logger: testLogger(t)})
	if err := srv.Start(path); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, path
}

func TestSocketModeAndParentDir(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "run", "kvmm", "vm1.sock")
	srv := NewServer(apitest.New(), Options{Logger: testLogger(t)})
	if err := srv.Start(path); err != nil {
		t.Fatalf("Start with a missing parent directory: %v", err)
	}
	defer srv.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	dir, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if dir.Mode().Perm() != socketDirMode {
		t.Errorf("created directory mode %v, want %v", dir.Mode().Perm(), fs.FileMode(socketDirMode))
	}
	if _, err := NewClient(path).VM(context.Background()); err != nil {
		t.Errorf("GET /vm on the socket: %v", err)
	}
}

// TestFchmodBeforeBind: the socket file is 0600 from the moment bind
// creates it, not only after the chmod that follows.
func TestFchmodBeforeBind(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "s")
	lc := net.ListenConfig{Control: fchmodBeforeBind}
	ln, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&^0o600 != 0 {
		t.Errorf("socket created with mode %v: wider than 0600", perm)
	}
}

func TestSocketRemovedOnClose(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "vm.sock")
	srv := NewServer(apitest.New(), Options{Logger: testLogger(t)})
	if err := srv.Start(path); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSocketRefusesLiveServer(t *testing.T) {
	first := apitest.New()
	_, path := startServer(t, first)
	second := NewServer(apitest.New(), Options{Logger: testLogger(t)})
	err := second.Start(path)
	if err == nil {
		second.Close()
		t.Fatal("a second server took over the socket of a live one")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "a running VM answers") {
		t.Errorf("error %q does not name the path and the live VM", err)
	}
	// The first server is untouched.
	if _, err := NewClient(path).Pause(context.Background()); err != nil {
		t.Errorf("first server after the refused takeover: %v", err)
	}
	if s := first.State(); s != vmm.StatePaused {
		t.Errorf("first VM is %s", s)
	}
}

func TestSocketRefusesOtherListener(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "other.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		// Accept and hang up: a live process that does not speak the API.
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	srv := NewServer(apitest.New(), Options{Logger: testLogger(t)})
	err = srv.Start(path)
	if err == nil {
		srv.Close()
		t.Fatal("took over a socket another process listens on")
	}
	if !strings.Contains(err.Error(), "another process answers") {
		t.Errorf("error %q", err)
	}
}

func TestSocketStaleReplaced(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "vm.sock")
	// A socket file nobody listens on: what a killed kvmm leaves behind.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	srv := NewServer(apitest.New(), Options{Logger: testLogger(t)})
	if err := srv.Start(path); err != nil {
		t.Fatalf("Start over a stale socket: %v", err)
	}
	defer srv.Close()
	if _, err := NewClient(path).VM(context.Background()); err != nil {
		t.Errorf("GET /vm after replacing the stale socket: %v", err)
	}
}

func TestSocketRefusesNonSocket(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "important.txt")
	if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := NewServer(apitest.New(), Options{Logger: testLogger(t)})
	if err := srv.Start(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		srv.Close()
		t.Fatalf("Start over a regular file: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Errorf("regular file touched: %q, %v", b, err)
	}
}

// TestCloseLeavesSuccessorSocket: if another server replaced our socket
// file (it found it stale, e.g. after our listener died), Close must not
// delete the successor's socket.
func TestCloseLeavesSuccessorSocket(t *testing.T) {
	srv, path := startServer(t, apitest.New())
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	next := NewServer(apitest.New(), Options{Logger: testLogger(t)})
	if err := next.Start(path); err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := NewClient(path).VM(context.Background()); err != nil {
		t.Errorf("successor's socket gone after the first server's Close: %v", err)
	}
}

func TestStartTwice(t *testing.T) {
	srv, _ := startServer(t, apitest.New())
	if err := srv.Start(filepath.Join(shortTempDir(t), "again.sock")); err == nil {
		t.Error("second Start accepted")
	}
}

// TestCloseEndsStreams: Close returns even while a client watches the
// events of a VM that keeps running, and the socket is gone afterwards.
func TestCloseEndsStreams(t *testing.T) {
	f := apitest.New()
	path := filepath.Join(shortTempDir(t), "vm.sock")
	srv := NewServer(f, Options{Logger: testLogger(t)})
	if err := srv.Start(path); err != nil {
		t.Fatal(err)
	}
	ev, err := NewClient(path).Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	if _, err := ev.Next(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > shutdownGrace+2*time.Second {
		t.Errorf("Close took %v", d)
	}
	if _, err := ev.Next(); err == nil {
		t.Error("stream still delivering after Close")
	}
	waitFor(t, "the subscription to be released", func() bool { return f.Subscribers() == 0 })
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there: %v", err)
	}
}

// TestCloseDeliversFinalEvent: when the VM stops and the server closes
// right after (what `kvmm run` does), a watching client still gets the
// stopped event and a clean end of stream.
func TestCloseDeliversFinalEvent(t *testing.T) {
	f := apitest.New()
	path := filepath.Join(shortTempDir(t), "vm.sock")
	srv := NewServer(f, Options{Logger: testLogger(t)})
	if err := srv.Start(path); err != nil {
		t.Fatal(err)
	}
	ev, err := NewClient(path).Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	if _, err := ev.Next(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the subscription", func() bool { return f.Subscribers() == 1 })
	f.StopWith(0, "guest powered off")
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	e, err := ev.Next()
	if err != nil || e.State != vmm.StateStopped || e.Status == nil || *e.Status != 0 {
		t.Errorf("last event %+v, %v; want stopped with status 0", e, err)
	}
	if _, err := ev.Next(); err != io.EOF {
		t.Errorf("after the last event: %v, want io.EOF", err)
	}
}

func TestSocketPathTooLong(t *testing.T) {
	path := filepath.Join(shortTempDir(t), strings.Repeat("x", 120))
	srv := NewServer(apitest.New(), Options{Logger: testLogger(t)})
	if err := srv.Start(path); err == nil || !strings.Contains(err.Error(), "at most 107") {
		srv.Close()
		t.Errorf("Start with a %d-byte path: %v", len(path), err)
	}
}
