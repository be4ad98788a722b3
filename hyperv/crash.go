package hyperv

import (
	"bytes"
	"fmt"
	"strings"
)

// CRASH_CTL bits.
const (
	// CrashNotify (bit 63): written by the guest after P0-P4, read as the
	// host's offer to take crash reports.
	CrashNotify = 1 << 63
	// CrashNotifyMsg (bit 62): P3 is the GPA of a page of kernel log text
	// and P4 its length (Linux's kmsg dumper, when the host offers it).
	CrashNotifyMsg = 1 << 62
)

// MaxCrashMessage bounds the message read from guest memory: Linux hands
// over one 4 KiB page.
const MaxCrashMessage = 4096

// CrashReport is what a guest reported through the crash MSRs.
type CrashReport struct {
	VP  int       // the vCPU that wrote CRASH_CTL
	P   [5]uint64 // CRASH_P0..P4
	Ctl uint64    // the value written to CRASH_CTL
	// Message is the text at P3 (P4 bytes, at most MaxCrashMessage) when
	// Ctl has CrashNotifyMsg, with bytes that are not printable ASCII,
	// newline or tab shown as '.'.
	Message string
	// MessageError says why a promised message could not be read.
	MessageError string
	// Truncated is set when P4 exceeded MaxCrashMessage.
	Truncated bool
}

// String is a one-line summary for logs and events.
func (r CrashReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vcpu %d: P0=%#x P1=%#x P2=%#x P3=%#x P4=%#x", r.VP, r.P[0], r.P[1], r.P[2], r.P[3], r.P[4])
	switch {
	case r.MessageError != "":
		fmt.Fprintf(&b, "; message unreadable: %s", r.MessageError)
	case r.Ctl&CrashNotifyMsg != 0:
		msg := r.Message
		if r.Truncated {
			msg += " [truncated]"
		}
		fmt.Fprintf(&b, "; message: %q", msg)
	}
	return b.String()
}

// printable keeps printable ASCII, newlines and tabs, drops trailing NULs
// (the guest's page is zero-filled past the text) and shows every other
// byte as '.', so a guest cannot put control sequences into the host's
// logs or terminal.
func printable(b []byte) string {
	b = bytes.TrimRight(b, "\x00")
	out := make([]byte, len(b))
	for i, c := range b {
		switch {
		case c == '\n' || c == '\t' || (c >= 0x20 && c < 0x7f):
			out[i] = c
		default:
			out[i] = '.'
		}
	}
	return string(out)
}
