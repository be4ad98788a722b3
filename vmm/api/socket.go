package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// socketMode: only the VM's owner may drive it. Anyone who can
	// connect can stop the VM.
	socketMode = 0o600
	// socketDirMode is for a parent directory we create (e.g. /run/kvmm):
	// private as well, since it holds nothing but owner-only sockets.
	socketDirMode = 0o700
	// maxSocketPath is the longest path sockaddr_un's sun_path holds
	// with its terminating NUL.
	maxSocketPath = len(unix.RawSockaddrUnix{}.Path) - 1
	// probeTimeout bounds the check of whether a server answers on an
	// existing socket file.
	probeTimeout = time.Second
)

// socket is the listening API socket and the file Start created for it.
type socket struct {
	path string
	ln   *net.UnixListener
	file os.FileInfo // identity of our socket file, so Close removes only it
}

// listenSocket creates a unix socket at path with mode 0600, creating the
// parent directory if it is missing. An existing socket file is replaced
// when nothing answers on it (a kvmm that died without cleaning up left it
// behind); when something does answer, or the path is not a socket, it is
// an error: two VMs must never share a socket.
func listenSocket(path string) (*socket, error) {
	if path == "" {
		return nil, errors.New("api socket: empty path")
	}
	if len(path) > maxSocketPath {
		// bind would fail with a bare EINVAL.
		return nil, fmt.Errorf("api socket %s: path is %d bytes, unix sockets allow at most %d", path, len(path), maxSocketPath)
	}
	if err := os.MkdirAll(filepath.Dir(path), socketDirMode); err != nil {
		return nil, fmt.Errorf("api socket %s: creating its directory: %w", path, err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: fchmodBeforeBind}
	ln, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	// Close removes the file itself, and only if it is still ours.
	ul.SetUnlinkOnClose(false)
	fail := func(err error) (*socket, error) {
		ul.Close()
		os.Remove(path)
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	// The fchmod before bind made the file 0600 from its creation (Linux
	// gives the file the socket inode's mode). Set it again before the
	// first Accept in case a kernel did not.
	if err := os.Chmod(path, socketMode); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &socket{path: path, ln: ul, file: fi}, nil
}

// fchmodBeforeBind is a ListenConfig.Control hook: it runs after socket()
// and before bind(), so the socket file never exists with a wider mode
// (a chmod after bind leaves a window in which anyone allowed by the umask
// could connect, and a connection queued then would be accepted later).
// Setting the umask instead would change it for the whole process.
func fchmodBeforeBind(_, _ string, c syscall.RawConn) error {
	var chmodErr error
	if err := c.Control(func(fd uintptr) { chmodErr = unix.Fchmod(int(fd), socketMode) }); err != nil {
		return err
	}
	if chmodErr != nil {
		return fmt.Errorf("fchmod before bind: %w", chmodErr)
	}
	return nil
}

// removeStale removes path if it is a socket nobody listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("api socket %s: exists and is not a socket; not replacing it", path)
	}
	conn, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		conn.Close()
		return fmt.Errorf("api socket %s: %s answers on it; not replacing it", path, describeLive(path))
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// E.g. EAGAIN (a full backlog: a live but busy server) or EACCES.
		return fmt.Errorf("api socket %s: cannot tell whether it is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("api socket %s: removing the stale socket: %w", path, err)
	}
	return nil
}

// describeLive names what listens on path for the error message: a kvmm VM
// and its state when it speaks the API, "another process" otherwise.
func describeLive(path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	c := NewClient(path)
	defer c.Close()
	info, err := c.VM(ctx)
	if err != nil || info.State == "" {
		return "another process"
	}
	return fmt.Sprintf("a %s VM", info.State)
}

// remove closes the listener (if still open) and deletes the socket file
// if it is still the one listenSocket created: after a stale-socket
// takeover by another kvmm the path is no longer ours to delete.
func (s *socket) remove() error {
	if s == nil {
		return nil
	}
	if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("api socket %s: closing: %w", s.path, err)
	}
	fi, err := os.Lstat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api socket %s: %w", s.path, err)
	}
	if !os.SameFile(fi, s.file) {
		return nil
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("api socket %s: removing: %w", s.path, err)
	}
	return nil
}
