package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvmm/kvmm/vmm"
	"github.com/kvmm/kvmm/vmm/api/apitest"
)

// TestClient drives every endpoint through the client over a real unix
// socket.
func TestClient(t *testing.T) {
	f := apitest.New()
	_, path := startServer(t, f)
	c := NewClient(path)
	ctx := context.Background()

	info, err := c.VM(ctx)
	if err != nil || info.State != vmm.StateRunning || info.VCPUs != 2 {
		t.Fatalf("VM: %+v, %v", info, err)
	}
	ev, err := c.Events(ctx)
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	defer ev.Close()
	if e, err := ev.Next(); err != nil || e.State != vmm.StateRunning {
		t.Fatalf("first event %+v, %v", e, err)
	}

	st, err := c.Pause(ctx)
	if err != nil || st.State != vmm.StatePaused || st.Previous != vmm.StateRunning || st.TookNS <= 0 {
		t.Fatalf("Pause: %+v, %v", st, err)
	}
	_, err = c.Pause(ctx)
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict || !strings.Contains(apiErr.Message, "already paused") {
		t.Errorf("second Pause: %v, want a 409 *Error", err)
	}
	if err.Error() != apiErr.Message {
		t.Errorf("error text %q adds to the server's message %q", err, apiErr.Message)
	}
	if st, err := c.Resume(ctx); err != nil || st.State != vmm.StateRunning {
		t.Fatalf("Resume: %+v, %v", st, err)
	}
	m, err := c.Metrics(ctx, 1)
	if err != nil || len(m.PIO) != 1 || m.PIO[0].Name != "post" {
		t.Errorf("Metrics(1): %+v, %v", m, err)
	}
	if m, err := c.Metrics(ctx, 0); err != nil || len(m.PIO) != 3 {
		t.Errorf("Metrics(0): %+v, %v", m, err)
	}
	doc, err := c.OpenAPI(ctx)
	if err != nil || string(doc) != string(OpenAPI()) {
		t.Errorf("OpenAPI: %d bytes, %v", len(doc), err)
	}
	if r, err := c.Power(ctx, PowerButton); err != nil || r.Action != PowerButton {
		t.Errorf("Power(button): %+v, %v", r, err)
	}
	if _, err := c.Power(ctx, "jump"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest {
		t.Errorf("Power(jump): %v, want a 400", err)
	}
	if r, err := c.Power(ctx, PowerShutdown); err != nil || r.State != vmm.StateStopped {
		t.Errorf("Power(shutdown): %+v, %v", r, err)
	}

	// The stream saw every change, in order, and ends with the stop.
	var got []string
	for {
		e, err := ev.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		got = append(got, e.Type+":"+string(e.State))
	}
	want := []string{"state:paused", "state:running", "power-button:", "state:stopped"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("events %v, want %v", got, want)
	}
}

func TestClientNoServer(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "nobody.sock")
	_, err := NewClient(path).VM(context.Background())
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("error %v does not name the socket and the cause", err)
	}
	if strings.Contains(err.Error(), "http://") {
		t.Errorf("error %q shows the internal URL", err)
	}
}

// TestClientEventsCancel: cancelling the context ends Next and frees the
// server-side subscription.
func TestClientEventsCancel(t *testing.T) {
	f := apitest.New()
	_, path := startServer(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	ev, err := NewClient(path).Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	if _, err := ev.Next(); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	if _, err := ev.Next(); !errors.Is(err, context.Canceled) {
		t.Errorf("Next after cancel: %v, want context.Canceled", err)
	}
	waitFor(t, "the subscription to be released", func() bool { return f.Subscribers() == 0 })
}
