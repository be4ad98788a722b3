package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvmm/kvmm/vmm"
	"github.com/kvmm/kvmm/vmm/api/apitest"
)

// testLogger sends the server's logs to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func newTestServer(t *testing.T, vm VMController) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(NewServer(vm, Options{Logger: testLogger(t)}).Handler())
	t.Cleanup(ts.Close)
	return ts
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

// errorText is the "error" of a JSON error body, or "" when the body is
// not one.
func (r reply) errorText() string {
	var e ErrorResponse
	if json.Unmarshal(r.body, &e) != nil {
		return ""
	}
	return e.Error
}

func call(t *testing.T, ts *httptest.Server, method, path, body string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

func decode[T any](t *testing.T, r reply) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %s into %T: %v", r.body, v, err)
	}
	return v
}

func TestGetVM(t *testing.T) {
	f := apitest.New()
	ts := newTestServer(t, f)
	r := call(t, ts, "GET", "/vm", "")
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	info := decode[VMInfo](t, r)
	if info.State != vmm.StateRunning || info.VCPUs != 2 || info.MemoryBytes != 128<<20 {
		t.Errorf("info = %+v", info)
	}
	if info.UptimeNS <= 0 || info.Uptime == "" {
		t.Errorf("no uptime: %+v", info)
	}
	if info.Config.CPUs != 2 || info.Config.Memory != 128<<20 {
		t.Errorf("config = %+v", info.Config)
	}
}

func TestPauseResume(t *testing.T) {
	f := apitest.New()
	ts := newTestServer(t, f)
	r := call(t, ts, "PUT", "/vm/state", `{"state":"paused"}`)
	if r.status != http.StatusOK {
		t.Fatalf("pause: status %d: %s", r.status, r.body)
	}
	got := decode[StateResponse](t, r)
	want := StateResponse{State: vmm.StatePaused, Previous: vmm.StateRunning, TookNS: apitest.PauseLatency, Took: "100µs"}
	if got != want {
		t.Errorf("pause answered %+v, want %+v", got, want)
	}
	if s := f.State(); s != vmm.StatePaused {
		t.Errorf("VM is %s after pause", s)
	}
	r = call(t, ts, "PUT", "/vm/state", `{"state":"running"}`)
	if r.status != http.StatusOK {
		t.Fatalf("resume: status %d: %s", r.status, r.body)
	}
	got = decode[StateResponse](t, r)
	want = StateResponse{State: vmm.StateRunning, Previous: vmm.StatePaused, TookNS: apitest.ResumeLatency, Took: "50µs"}
	if got != want {
		t.Errorf("resume answered %+v, want %+v", got, want)
	}
}

func TestPCIDump(t *testing.T) {
	f := apitest.New()
	ts := newTestServer(t, f)
	for _, path := range []string{"/vm/pci", "/vm/pci?extended=true"} {
		r := call(t, ts, "GET", path, "")
		if r.status != http.StatusOK || string(r.body) != apitest.PCIDumpText {
			t.Errorf("GET %s: status %d, body %q", path, r.status, r.body)
		}
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("GET %s: Content-Type %q", path, ct)
		}
	}
	if r := call(t, ts, "GET", "/vm/pci?extended=maybe", ""); r.status != http.StatusBadRequest || !strings.Contains(r.errorText(), "extended") {
		t.Errorf("bad extended: status %d, %s", r.status, r.body)
	}
	if r := call(t, ts, "GET", "/vm/pci?verbose=1", ""); r.status != http.StatusBadRequest {
		t.Errorf("unknown parameter: status %d", r.status)
	}
	f.StopWith(0, "guest powered off")
	if r := call(t, ts, "GET", "/vm/pci", ""); r.status != http.StatusConflict {
		t.Errorf("dump of a stopped VM: status %d, want 409", r.status)
	}
}

// TestWake: "running" on a suspended VM is an S3 wake, and so is the power
// button.
func TestWake(t *testing.T) {
	f := apitest.New()
	ts := newTestServer(t, f)
	f.Suspend()
	r := call(t, ts, "PUT", "/vm/state", `{"state":"running"}`)
	if r.status != http.StatusOK {
		t.Fatalf("wake: status %d: %s", r.status, r.body)
	}
	got := decode[StateResponse](t, r)
	want := StateResponse{State: vmm.StateRunning, Previous: vmm.StateSuspended, TookNS: apitest.WakeLatency, Took: "200µs"}
	if got != want {
		t.Errorf("wake answered %+v, want %+v", got, want)
	}
	f.Suspend()
	if r := call(t, ts, "PUT", "/vm/power", `{"action":"button"}`); r.status != http.StatusAccepted {
		t.Fatalf("button on a suspended VM: status %d: %s", r.status, r.body)
	}
	if s := f.State(); s != vmm.StateRunning {
		t.Errorf("power button did not wake the VM: %s", s)
	}
}

// TestBadRequests: every malformed request gets its status and a JSON
// error naming the problem, and the VM keeps running.
func TestBadRequests(t *testing.T) {
	big := `{"state":"paused","x":"` + strings.Repeat("a", MaxBodyBytes) + `"}`
	padded := `{"state":"paused"}` + strings.Repeat(" ", MaxBodyBytes)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		mention                  string // in the error text
		allow                    string
	}{
		{"unknown path", "GET", "/nope", "", 404, "/nope", ""},
		{"trailing slash", "GET", "/vm/", "", 404, "/vm/", ""},
		{"unknown subpath", "PUT", "/vm/state/x", `{"state":"paused"}`, 404, "/vm/state/x", ""},
		{"POST /vm", "POST", "/vm", "", 405, "POST", "GET"},
		{"GET /vm/state", "GET", "/vm/state", "", 405, "GET", "PUT"},
		{"DELETE /vm/power", "DELETE", "/vm/power", "", 405, "DELETE", "PUT"},
		{"PUT /vm/metrics", "PUT", "/vm/metrics", "{}", 405, "PUT", "GET"},
		{"POST /vm/events", "POST", "/vm/events", "", 405, "POST", "GET"},
		{"truncated JSON", "PUT", "/vm/state", `{"state":`, 400, "malformed JSON", ""},
		{"not JSON", "PUT", "/vm/state", `pause please`, 400, "malformed JSON", ""},
		{"unknown field", "PUT", "/vm/state", `{"state":"paused","force":true}`, 400, `"force"`, ""},
		{"unknown power field", "PUT", "/vm/power", `{"action":"button","delay":5}`, 400, `"delay"`, ""},
		{"empty body", "PUT", "/vm/state", "", 400, "empty", ""},
		{"two objects", "PUT", "/vm/state", `{"state":"paused"}{"state":"running"}`, 400, "trailing", ""},
		{"wrong type", "PUT", "/vm/state", `{"state":5}`, 400, `"state"`, ""},
		{"array body", "PUT", "/vm/state", `["paused"]`, 400, "JSON object", ""},
		{"unknown state", "PUT", "/vm/state", `{"state":"sleeping"}`, 400, `"sleeping"`, ""},
		{"state stopped", "PUT", "/vm/state", `{"state":"stopped"}`, 400, `"stopped"`, ""},
		{"missing state", "PUT", "/vm/state", `{}`, 400, `missing "state"`, ""},
		{"unknown action", "PUT", "/vm/power", `{"action":"jump"}`, 400, `"jump"`, ""},
		{"missing action", "PUT", "/vm/power", `{}`, 400, `missing "action"`, ""},
		{"body too large", "PUT", "/vm/state", big, 413, "larger than 65536 bytes", ""},
		{"padding too large", "PUT", "/vm/state", padded, 413, "larger than", ""},
		{"top negative", "GET", "/vm/metrics?top=-1", "", 400, `"-1"`, ""},
		{"top not a number", "GET", "/vm/metrics?top=lots", "", 400, `"lots"`, ""},
		{"unknown query", "GET", "/vm/metrics?tpo=3", "", 400, `"tpo"`, ""},
		{"query on /vm", "GET", "/vm?verbose=1", "", 400, `"verbose"`, ""},
		{"resume running", "PUT", "/vm/state", `{"state":"running"}`, 409, "already running", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := apitest.New()
			ts := newTestServer(t, f)
			r := call(t, ts, tc.method, tc.path, tc.body)
			if r.status != tc.status {
				t.Errorf("status %d, want %d (%s)", r.status, tc.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			msg := r.errorText()
			if !strings.Contains(msg, tc.mention) {
				t.Errorf("error %q does not mention %q (body %s)", msg, tc.mention, r.body)
			}
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			if s := f.State(); s != vmm.StateRunning {
				t.Errorf("VM is %s after a bad request", s)
			}
			if p, rs, st := f.Counts(); p != 0 || rs != 0 || len(st) != 0 {
				t.Errorf("bad request acted on the VM: presses %d resets %d stops %v", p, rs, st)
			}
		})
	}
}

// TestConflicts: state changes and power actions that make no sense in the
// current state are 409s that leave the state alone.
func TestConflicts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		from    vmm.State
		path    string
		body    string
		mention string
	}{
		{"pause paused", vmm.StatePaused, "/vm/state", `{"state":"paused"}`, "already paused"},
		{"resume running", vmm.StateRunning, "/vm/state", `{"state":"running"}`, "already running"},
		{"resume stopped", vmm.StateStopped, "/vm/state", `{"state":"running"}`, "stopped"},
		{"pause stopped", vmm.StateStopped, "/vm/state", `{"state":"paused"}`, "stopped"},
		{"pause created", vmm.StateCreated, "/vm/state", `{"state":"paused"}`, "created"},
		{"pause suspended", vmm.StateSuspended, "/vm/state", `{"state":"paused"}`, "suspended"},
		{"suspend paused", vmm.StatePaused, "/vm/state", `{"state":"suspended"}`, "paused"},
		{"suspend running", vmm.StateRunning, "/vm/state", `{"state":"suspended"}`, "entered by the guest"},
		{"suspend suspended", vmm.StateSuspended, "/vm/state", `{"state":"suspended"}`, "already suspended"},
		{"button paused", vmm.StatePaused, "/vm/power", `{"action":"button"}`, "paused"},
		{"button stopped", vmm.StateStopped, "/vm/power", `{"action":"button"}`, "stopped"},
		{"reset stopped", vmm.StateStopped, "/vm/power", `{"action":"reset"}`, "stopped"},
		{"shutdown stopped", vmm.StateStopped, "/vm/power", `{"action":"shutdown"}`, "already stopped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := apitest.New()
			if tc.from == vmm.StateStopped {
				f.StopWith(0, "guest powered off")
			} else {
				f.SetState(tc.from)
			}
			ts := newTestServer(t, f)
			r := call(t, ts, "PUT", tc.path, tc.body)
			if r.status != http.StatusConflict {
				t.Errorf("status %d, want 409 (%s)", r.status, r.body)
			}
			if msg := r.errorText(); !strings.Contains(msg, tc.mention) {
				t.Errorf("error %q does not mention %q", msg, tc.mention)
			}
			if s := f.State(); s != tc.from {
				t.Errorf("state %s after a refused request, want %s", s, tc.from)
			}
		})
	}
}

// TestVMErrorIs500: a failure that is not about the state is a 500 that
// says what failed.
func TestVMErrorIs500(t *testing.T) {
	f := apitest.New()
	f.FailPause(errors.New("KVM_RUN: input/output error"))
	ts := newTestServer(t, f)
	r := call(t, ts, "PUT", "/vm/state", `{"state":"paused"}`)
	if r.status != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500 (%s)", r.status, r.body)
	}
	if msg := r.errorText(); !strings.Contains(msg, "pause") || !strings.Contains(msg, "input/output error") {
		t.Errorf("error %q lacks the operation and the cause", msg)
	}
}

func TestPowerActions(t *testing.T) {
	f := apitest.New()
	ts := newTestServer(t, f)
	for _, tc := range []struct {
		action PowerAction
		state  vmm.State
	}{{PowerButton, vmm.StateRunning}, {PowerReset, vmm.StateRunning}, {PowerShutdown, vmm.StateStopped}} {
		r := call(t, ts, "PUT", "/vm/power", fmt.Sprintf(`{"action":%q}`, tc.action))
		if r.status != http.StatusAccepted {
			t.Fatalf("%s: status %d (%s)", tc.action, r.status, r.body)
		}
		got := decode[PowerResponse](t, r)
		if got.Action != tc.action || got.State != tc.state {
			t.Errorf("%s answered %+v, want state %s", tc.action, got, tc.state)
		}
	}
	presses, resets, stops := f.Counts()
	if presses != 1 || resets != 1 || len(stops) != 1 || !strings.Contains(stops[0], "API") {
		t.Errorf("presses %d resets %d stops %q", presses, resets, stops)
	}
	// A reset of a paused VM is allowed: it reboots.
	g := apitest.New()
	g.SetState(vmm.StatePaused)
	if r := call(t, newTestServer(t, g), "PUT", "/vm/power", `{"action":"reset"}`); r.status != http.StatusAccepted {
		t.Errorf("reset of a paused VM: status %d (%s)", r.status, r.body)
	}
}

func TestMetrics(t *testing.T) {
	f := apitest.New()
	ts := newTestServer(t, f)
	r := call(t, ts, "GET", "/vm/metrics", "")
	if r.status != http.StatusOK {
		t.Fatalf("status %d (%s)", r.status, r.body)
	}
	m := decode[vmm.Metrics](t, r)
	if len(m.PIO) != 3 || m.PIO[0].Name != "post" || m.PIO[0].Accesses == 0 {
		t.Errorf("PIO = %+v", m.PIO)
	}
	if len(m.VCPUs) != 2 || m.VCPUs[0].RunTime != time.Second || m.Exits["io"] == 0 {
		t.Errorf("metrics = %+v", m)
	}
	for _, top := range []int{0, 1, 2, 5} {
		m := decode[vmm.Metrics](t, call(t, ts, "GET", fmt.Sprintf("/vm/metrics?top=%d", top), ""))
		want := 3
		if top > 0 && top < 3 {
			want = top
		}
		if len(m.PIO) != want {
			t.Errorf("top=%d: %d PIO ranges, want %d", top, len(m.PIO), want)
		}
	}
}

func TestOpenAPIServed(t *testing.T) {
	ts := newTestServer(t, apitest.New())
	r := call(t, ts, "GET", "/openapi.yaml", "")
	if r.status != http.StatusOK || !bytes.Equal(r.body, OpenAPI()) {
		t.Errorf("status %d, %d bytes; want 200 and the embedded %d bytes", r.status, len(r.body), len(OpenAPI()))
	}
	if ct := r.header.Get("Content-Type"); ct != "application/yaml" {
		t.Errorf("Content-Type %q", ct)
	}
}

// TestRequestLog: every request is logged at debug level with method,
// path, status and duration; a state change at info with its latency.
func TestRequestLog(t *testing.T) {
	var buf vmm.SerialBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts := httptest.NewServer(NewServer(apitest.New(), Options{Logger: log}).Handler())
	defer ts.Close()
	call(t, ts, "PUT", "/vm/state", `{"state":"paused"}`)
	call(t, ts, "GET", "/nope", "")
	out := buf.String()
	for _, want := range []string{
		`level=DEBUG msg="API request" component=api method=PUT path=/vm/state status=200 duration=`,
		`level=DEBUG msg="API request" component=api method=GET path=/nope status=404 duration=`,
		`level=INFO msg="VM state changed" component=api action=pause from=running to=paused took=100µs`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// TestConcurrentRequests hammers one VM from many goroutines (run with
// -race): every answer is a 200 or a 409, and the VM ends in a state that
// matches the last successful change.
func TestConcurrentRequests(t *testing.T) {
	f := apitest.New()
	ts := newTestServer(t, f)
	const workers, perWorker = 16, 40
	var wg sync.WaitGroup
	errs := make(chan string, workers*perWorker)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range perWorker {
				var method, path, body string
				switch rng.IntN(5) {
				case 0:
					method, path, body = "PUT", "/vm/state", `{"state":"paused"}`
				case 1:
					method, path, body = "PUT", "/vm/state", `{"state":"running"}`
				case 2:
					method, path = "GET", "/vm/metrics?top=2"
				case 3:
					method, path = "GET", "/vm"
				case 4:
					method, path, body = "PUT", "/vm/power", `{"action":"button"}`
				}
				req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
				resp, err := ts.Client().Do(req)
				if err != nil {
					errs <- err.Error()
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusOK, http.StatusAccepted, http.StatusConflict:
				default:
					errs <- fmt.Sprintf("%s %s: %d %s", method, path, resp.StatusCode, b)
				}
			}
		}()
	}
	// Event streams open and close while the requests run.
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/vm/events", nil)
				if resp, err := ts.Client().Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if s := f.State(); s != vmm.StateRunning && s != vmm.StatePaused {
		t.Errorf("final state %s", s)
	}
	waitFor(t, "every event subscription to be released", func() bool { return f.Subscribers() == 0 })
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openEvents opens GET /vm/events and returns a line reader.
func openEvents(t *testing.T, ctx context.Context, ts *httptest.Server) (*bufio.Scanner, *http.Response) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", ts.URL+"/vm/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("GET /vm/events: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /vm/events: status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type %q", ct)
	}
	return bufio.NewScanner(resp.Body), resp
}

func nextEvent(t *testing.T, sc *bufio.Scanner) vmm.Event {
	t.Helper()
	if !sc.Scan() {
		t.Fatalf("event stream ended early: %v", sc.Err())
	}
	var e vmm.Event
	if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
		t.Fatalf("event %q: %v", sc.Text(), err)
	}
	return e
}

// TestEventStream: the current state first, then events in order, each
// its own line as it happens, then the end when the VM stops.
func TestEventStream(t *testing.T) {
	f := apitest.New()
	f.SetState(vmm.StatePaused)
	ts := newTestServer(t, f)
	sc, resp := openEvents(t, context.Background(), ts)
	if te := resp.TransferEncoding; len(te) != 1 || te[0] != "chunked" {
		t.Errorf("Transfer-Encoding %v, want chunked", te)
	}
	first := nextEvent(t, sc)
	if first.Type != "state" || first.State != vmm.StatePaused || first.Time.IsZero() {
		t.Errorf("first event %+v, want the current state (paused)", first)
	}
	waitFor(t, "the subscription", func() bool { return f.Subscribers() == 1 })
	// Each event must arrive on its own, before the next is published
	// (flushed, not buffered until the stream ends).
	for i := range 5 {
		f.Publish(vmm.Event{Type: "guest-event", Detail: fmt.Sprint(i)})
		if e := nextEvent(t, sc); e.Type != "guest-event" || e.Detail != fmt.Sprint(i) {
			t.Fatalf("event %d = %+v", i, e)
		}
	}
	// A burst arrives complete and in order.
	for i := range 40 {
		f.Publish(vmm.Event{Type: "burst", Detail: fmt.Sprint(i)})
	}
	for i := range 40 {
		if e := nextEvent(t, sc); e.Detail != fmt.Sprint(i) {
			t.Fatalf("burst event %d has detail %q: out of order", i, e.Detail)
		}
	}
	f.StopWith(0, "guest powered off (ACPI S5)")
	last := nextEvent(t, sc)
	if last.State != vmm.StateStopped || last.Status == nil || *last.Status != 0 {
		t.Errorf("last event %+v, want stopped with status 0", last)
	}
	if sc.Scan() {
		t.Errorf("stream goes on after stopped: %q", sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Errorf("stream did not end cleanly: %v", err)
	}
}

func TestEventStreamOfStoppedVM(t *testing.T) {
	f := apitest.New()
	f.StopWith(0, "guest powered off")
	ts := newTestServer(t, f)
	sc, _ := openEvents(t, context.Background(), ts)
	if e := nextEvent(t, sc); e.State != vmm.StateStopped {
		t.Errorf("first event %+v, want stopped", e)
	}
	if sc.Scan() {
		t.Errorf("stream goes on: %q", sc.Text())
	}
}

// TestEventStreamClientGone: a client that disconnects frees its
// subscription, and the VM is unaffected.
func TestEventStreamClientGone(t *testing.T) {
	f := apitest.New()
	ts := newTestServer(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	sc, _ := openEvents(t, ctx, ts)
	nextEvent(t, sc)
	waitFor(t, "the subscription", func() bool { return f.Subscribers() == 1 })
	cancel()
	waitFor(t, "the subscription to be released", func() bool { return f.Subscribers() == 0 })
	if s := f.State(); s != vmm.StateRunning {
		t.Errorf("VM is %s", s)
	}
	// Events published after the client left go nowhere and block nothing.
	for range 100 {
		f.Publish(vmm.Event{Type: "guest-event"})
	}
}

var _ VMController = (*apitest.FakeVM)(nil)
