package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// runResult is how one benchmark process went.
type runResult struct {
	// Wall is the time from just before fork/exec to the reaping of the
	// exited process.
	Wall time.Duration
	// FirstOutput is the time from the same start to the first byte on
	// its standard output (the guest's serial console); 0 if there was
	// none.
	FirstOutput time.Duration
	// Lines are the output lines with the times their first and last
	// bytes arrived.
	Lines  []TimedLine
	Status int // exit status; -1 when killed by a signal
	Stdout string
	Stderr string
}

// TimedLine is a line of output (without its newline) and when, from the
// process start, the read that brought its first byte and the one that
// brought its newline returned.
type TimedLine struct {
	Text       string
	Start, End time.Duration
}

// lineRecorder is an io.Writer that keeps the output and timestamps it
// line by line as the reads of the pipe deliver it.
type lineRecorder struct {
	mu      sync.Mutex
	start   time.Time
	buf     bytes.Buffer
	lines   []TimedLine
	partial []byte
	pStart  time.Duration
}

func (w *lineRecorder) Write(p []byte) (int, error) {
	now := time.Since(w.start)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.record(p, now)
	return w.buf.Write(p)
}

// record splits p into lines arriving at time now.
func (w *lineRecorder) record(p []byte, now time.Duration) {
	for len(p) > 0 {
		if len(w.partial) == 0 {
			w.pStart = now
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.partial = append(w.partial, p...)
			return
		}
		w.partial = append(w.partial, p[:i]...)
		text := strings.TrimSuffix(string(w.partial), "\r")
		w.lines = append(w.lines, TimedLine{Text: text, Start: w.pStart, End: now})
		w.partial = w.partial[:0]
		p = p[i+1:]
	}
}

// firstByte is when the first byte arrived, or 0.
func (w *lineRecorder) firstByte() time.Duration {
	if len(w.lines) > 0 {
		return w.lines[0].Start
	}
	if len(w.partial) > 0 {
		return w.pStart
	}
	return 0
}

// findLine returns the first line that starts with prefix.
func findLine(lines []TimedLine, prefix string) (TimedLine, bool) {
	for _, l := range lines {
		if strings.HasPrefix(l.Text, prefix) {
			return l, true
		}
	}
	return TimedLine{}, false
}

// runTimed runs argv to completion (standard input /dev/null) and times it.
// A non-zero exit status is not an error; failing to run or a timeout is.
func runTimed(ctx context.Context, argv []string, timeout time.Duration) (runResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := &lineRecorder{}
	var errBuf bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, &errBuf
	cmd.WaitDelay = time.Second
	out.start = time.Now()
	if err := cmd.Start(); err != nil {
		return runResult{}, fmt.Errorf("start %s: %w", argv[0], err)
	}
	waitErr := cmd.Wait()
	res := runResult{Wall: time.Since(out.start), Status: cmd.ProcessState.ExitCode()}
	out.mu.Lock()
	res.FirstOutput, res.Lines, res.Stdout = out.firstByte(), out.lines, out.buf.String()
	out.mu.Unlock()
	res.Stderr = errBuf.String()
	if ctx.Err() != nil {
		return res, fmt.Errorf("%s: no exit within %v: %w", argv[0], timeout, ctx.Err())
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		return res, fmt.Errorf("%s: %w", argv[0], waitErr)
	}
	return res, nil
}

// expectStatus fails unless the run exited with want.
func (r runResult) expectStatus(want int) error {
	if r.Status == want {
		return nil
	}
	return fmt.Errorf("exit status %d, want %d; output: %s; stderr: %s",
		r.Status, want, tail(r.Stdout, 300), tail(r.Stderr, 300))
}

// tail is the last n bytes of s on one line.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return strings.ReplaceAll(s, "\n", " | ")
}

// liveProcess is a benchmark process that runs until it is stopped.
type liveProcess struct {
	cmd     *exec.Cmd
	drained chan struct{}
	stderr  *bytes.Buffer
	// Ready is the time from fork/exec to the marker line on its output.
	Ready time.Duration
}

// startUntil starts argv and returns once a line of its standard output
// contains marker. The rest of its output is read and dropped, so it never
// blocks on a full pipe. Stop must be called in every case but an error.
func startUntil(ctx context.Context, argv []string, marker string, timeout time.Duration) (*liveProcess, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%s: stdout pipe: %w", argv[0], err)
	}
	p := &liveProcess{cmd: cmd, drained: make(chan struct{}), stderr: &bytes.Buffer{}}
	cmd.Stderr = p.stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	ready := make(chan time.Duration, 1)
	var seen bytes.Buffer
	go func() {
		defer close(p.drained)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), marker) {
				ready <- time.Since(start)
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
			if seen.Len() < 4096 {
				seen.WriteString(sc.Text() + "\n")
			}
		}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case p.Ready = <-ready:
		return p, nil
	case <-p.drained:
		p.Stop()
		return nil, fmt.Errorf("%s exited (status %d) before printing %q; output: %s; stderr: %s",
			argv[0], cmd.ProcessState.ExitCode(), marker, tail(seen.String(), 300), tail(p.stderr.String(), 300))
	case <-t.C:
		p.Stop()
		return nil, fmt.Errorf("%s: no %q within %v; output: %s", argv[0], marker, timeout, tail(seen.String(), 300))
	case <-ctx.Done():
		p.Stop()
		return nil, ctx.Err()
	}
}

// PID is the process id.
func (p *liveProcess) PID() int { return p.cmd.Process.Pid }

// Stop kills the process and reaps it.
func (p *liveProcess) Stop() {
	_ = p.cmd.Process.Kill()
	<-p.drained
	_ = p.cmd.Wait()
}
