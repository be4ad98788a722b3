package api

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kvmm/kvmm/balloon"
	"github.com/kvmm/kvmm/vmm"
)

// openAPIDoc is openapi.yaml. A string, so that nothing can modify it.
//
//go:embed openapi.yaml
var openAPIDoc string

// OpenAPI returns the API's OpenAPI 3 description, also served at
// GET /openapi.yaml.
func OpenAPI() []byte { return []byte(openAPIDoc) }

const (
	// MaxBodyBytes bounds a request body; a larger one gets 413. The
	// bodies the API takes are a few dozen bytes.
	MaxBodyBytes = 64 << 10

	// eventWriteTimeout bounds one write of the event stream, so a client
	// that stops reading without closing its connection cannot hold a
	// handler and a subscription forever.
	eventWriteTimeout = 10 * time.Second
	// readHeaderTimeout and idleTimeout bound idle or slow clients.
	// There is no overall write timeout: the event stream lasts as long as
	// the VM.
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	// shutdownGrace is how long Close lets requests in flight finish
	// before cutting their connections.
	shutdownGrace = 2 * time.Second
)

// Options configure a Server.
type Options struct {
	// Logger receives request logs (debug) and state changes (info); nil
	// uses slog.Default().
	Logger *slog.Logger
}

// Server serves the API for one VM. Its handler can be used on any
// listener (tests use httptest); Start and Close manage the unix socket.
type Server struct {
	vm      VMController
	log     *slog.Logger
	routes  []route
	handler http.Handler

	mu      sync.Mutex
	http    *http.Server
	sock    *socket
	cancel  context.CancelFunc // ends the request contexts (event streams)
	serving chan struct{}      // closed when Serve has returned
}

// route is one endpoint. The router and the OpenAPI consistency test both
// read Server.routes, so the two cannot disagree.
type route struct {
	method, path string
	handle       http.HandlerFunc
}

// NewServer returns a server for vm; nothing listens until Start.
func NewServer(vm VMController, opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{vm: vm, log: log.With("component", "api")}
	s.routes = []route{
		{http.MethodGet, "/vm", s.handleVM},
		{http.MethodPut, "/vm/state", s.handleState},
		{http.MethodPut, "/vm/power", s.handlePower},
		{http.MethodGet, "/vm/metrics", s.handleMetrics},
		{http.MethodGet, "/vm/pci", s.handlePCI},
		{http.MethodGet, "/vm/balloon", s.handleBalloon},
		{http.MethodPut, "/vm/balloon", s.handleSetBalloon},
		{http.MethodGet, "/vm/events", s.handleEvents},
		{http.MethodGet, "/openapi.yaml", s.handleOpenAPI},
	}
	s.handler = s.logRequests(http.HandlerFunc(s.dispatch))
	return s
}

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Start listens on the unix socket at path (see listenSocket for how an
// existing file is treated) and serves in the background until Close.
func (s *Server) Start(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.http != nil {
		return fmt.Errorf("api: already serving on %s", s.sock.path)
	}
	sock, err := listenSocket(path)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.http, s.sock, s.cancel, s.serving = hs, sock, cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		if err := hs.Serve(sock.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("API server stopped", "socket", sock.path, "err", err)
		}
	}(s.serving)
	s.log.Info("API listening", "socket", sock.path)
	return nil
}

// Close stops serving and removes the socket file (if it is still the one
// Start created). Event streams end at once, after passing on the events
// already queued (so a client watching a VM that has just stopped still
// gets the stopped event); other requests get shutdownGrace to finish.
func (s *Server) Close() error {
	s.mu.Lock()
	hs, sock, cancel, serving := s.http, s.sock, s.cancel, s.serving
	s.http, s.sock = nil, nil
	s.mu.Unlock()
	if hs == nil {
		return nil
	}
	cancel()
	ctx, stop := context.WithTimeout(context.Background(), shutdownGrace)
	err := hs.Shutdown(ctx)
	stop()
	if err != nil {
		err = hs.Close()
	}
	<-serving
	return errors.Join(err, sock.remove())
}

// dispatch routes a request. It replaces http.ServeMux so that 404 and 405
// answers carry the API's JSON error body.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, rt := range s.routes {
		if rt.path != r.URL.Path {
			continue
		}
		if rt.method == r.Method {
			rt.handle(w, r)
			return
		}
		allowed = append(allowed, rt.method)
	}
	if len(allowed) == 0 {
		writeError(w, http.StatusNotFound, "no such endpoint: %s", r.URL.Path)
		return
	}
	allow := strings.Join(allowed, ", ")
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow)
}

func (s *Server) handleVM(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r.URL.Query()); err != nil {
		s.fail(w, err)
		return
	}
	cfg := s.vm.Config()
	up := s.vm.Uptime()
	writeJSON(w, http.StatusOK, VMInfo{
		State:       s.vm.State(),
		UptimeNS:    up,
		Uptime:      up.Round(time.Millisecond).String(),
		VCPUs:       cfg.CPUs,
		MemoryBytes: uint64(cfg.Memory),
		Config:      cfg,
	})
}

// transition is a state change PUT /vm/state can ask for.
type transition struct {
	verb string // "pause", "resume": for logs and errors
	from vmm.State
	to   vmm.State
	do   func() (time.Duration, error)
}

// transitionTo says how to bring a VM in state cur to want. Asking for a
// state the API does not set is a 400; a change that makes no sense from
// cur (resuming a running or stopped VM) is a 409.
func (s *Server) transitionTo(cur, want vmm.State) (transition, error) {
	switch want {
	case vmm.StatePaused:
		if cur == vmm.StateRunning {
			return transition{"pause", cur, want, s.vm.Pause}, nil
		}
	case vmm.StateRunning:
		switch cur {
		case vmm.StatePaused:
			return transition{"resume", cur, want, s.vm.Resume}, nil
		case vmm.StateSuspended:
			return transition{"wake", cur, want, s.vm.Wake}, nil
		}
	case vmm.StateSuspended:
		// S3 is entered by the guest (echo mem > /sys/power/state); the
		// host can only wake it.
		if cur == vmm.StateSuspended {
			return transition{}, conflict("VM is already suspended")
		}
		return transition{}, conflict("cannot suspend: VM is %s; ACPI S3 is entered by the guest (echo mem > /sys/power/state), the host can only wake it", cur)
	case "":
		return transition{}, badRequest(`missing "state": want "running" or "paused"`)
	default:
		return transition{}, badRequest("state %q: want \"running\" or \"paused\"", want)
	}
	if cur == want {
		return transition{}, conflict("VM is already %s", cur)
	}
	return transition{}, conflict("cannot change state to %s: VM is %s", want, cur)
}

func (s *Server) handleState(w http.ResponseWriter, r *http.Request) {
	var req StateRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	tr, err := s.transitionTo(s.vm.State(), req.State)
	if err != nil {
		s.fail(w, err)
		return
	}
	took, err := tr.do()
	if err != nil {
		// Another request may have changed the state since it was read:
		// then the answer is the conflict as seen now.
		if _, cerr := s.transitionTo(s.vm.State(), req.State); cerr != nil {
			s.fail(w, cerr)
			return
		}
		s.fail(w, fmt.Errorf("%s: %w", tr.verb, err))
		return
	}
	s.log.Info("VM state changed", "action", tr.verb, "from", tr.from, "to", tr.to, "took", took)
	writeJSON(w, http.StatusOK, StateResponse{State: tr.to, Previous: tr.from, TookNS: took, Took: took.String()})
}

// powerAction checks that action makes sense for a VM in state cur and
// returns what performs it.
func (s *Server) powerAction(action PowerAction, cur vmm.State) (func() error, error) {
	switch action {
	case PowerButton:
		// On a suspended VM the button is a wake source.
		if cur != vmm.StateRunning && cur != vmm.StateSuspended {
			return nil, conflict("power button: VM is %s, not running or suspended", cur)
		}
		return s.vm.PowerButton, nil
	case PowerReset:
		if cur != vmm.StateRunning && cur != vmm.StatePaused && cur != vmm.StateSuspended {
			return nil, conflict("reset: VM is %s, not running, paused or suspended", cur)
		}
		return s.vm.HostReset, nil
	case PowerShutdown:
		if cur == vmm.StateStopped {
			return nil, conflict("shutdown: VM is already stopped")
		}
		return func() error { s.vm.Stop("shutdown through the API"); return nil }, nil
	case "":
		return nil, badRequest(`missing "action": want "button", "reset" or "shutdown"`)
	}
	return nil, badRequest("action %q: want \"button\", \"reset\" or \"shutdown\"", action)
}

func (s *Server) handlePower(w http.ResponseWriter, r *http.Request) {
	var req PowerRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	do, err := s.powerAction(req.Action, s.vm.State())
	if err != nil {
		s.fail(w, err)
		return
	}
	if err := do(); err != nil {
		if _, cerr := s.powerAction(req.Action, s.vm.State()); cerr != nil {
			s.fail(w, cerr)
			return
		}
		s.fail(w, fmt.Errorf("power %s: %w", req.Action, err))
		return
	}
	s.log.Info("power action", "action", req.Action)
	// 202: the guest (button) or the VM's supervisor (reset, shutdown)
	// completes the action; the event stream reports the outcome.
	writeJSON(w, http.StatusAccepted, PowerResponse{Action: req.Action, State: s.vm.State()})
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := checkQuery(q, "top"); err != nil {
		s.fail(w, err)
		return
	}
	top := 0
	if v := q.Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.fail(w, badRequest("top %q: want a count >= 0 (0: all)", v))
			return
		}
		top = n
	}
	writeJSON(w, http.StatusOK, s.vm.Metrics(top))
}

// handlePCI answers the configuration spaces as text in `lspci -x` format
// (`?extended=true`: 4 KiB per function, as `lspci -xxxx`), for the host's
// `lspci -F FILE -vvv` to decode.
func (s *Server) handlePCI(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := checkQuery(q, "extended"); err != nil {
		s.fail(w, err)
		return
	}
	extended := false
	if v := q.Get("extended"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.fail(w, badRequest("extended %q: want true or false", v))
			return
		}
		extended = b
	}
	var buf bytes.Buffer
	if err := s.vm.PCIDump(&buf, extended); err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// handleEvents streams events as newline-delimited JSON, one flushed
// chunk per event: first the current state, then every event until the VM
// stops (the subscription's channel closes), the client goes away or the
// server closes.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r.URL.Query()); err != nil {
		s.fail(w, err)
		return
	}
	// Subscribe before reading the state, so no change can fall between
	// the two; a change in that window shows up twice, which is harmless.
	events, unsubscribe := s.vm.Subscribe()
	defer unsubscribe()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(e vmm.Event) error {
		// Not every ResponseWriter has deadlines (httptest's recorder);
		// the stream still works without one.
		_ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
		if err := enc.Encode(e); err != nil {
			return err
		}
		return rc.Flush()
	}
	// A fresh deadline for the chunked stream's terminator after the loop.
	defer func() { _ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout)) }()
	if err := send(vmm.Event{Time: time.Now(), Type: "state", State: s.vm.State(), Detail: "current state"}); err != nil {
		return
	}
	for {
		select {
		case e, ok := <-events:
			if !ok {
				return
			}
			if err := send(e); err != nil {
				s.log.Debug("event stream ended", "err", err)
				return
			}
		case <-r.Context().Done():
			// The client left, or the server is closing: pass on what is
			// already queued (the last events of a VM that has just
			// stopped), then end.
			for {
				select {
				case e, ok := <-events:
					if !ok || send(e) != nil {
						return
					}
				default:
					return
				}
			}
		}
	}
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, openAPIDoc)
}

func (s *Server) handleBalloon(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r.URL.Query()); err != nil {
		s.fail(w, err)
		return
	}
	st, err := s.vm.BalloonStats()
	if err != nil {
		s.fail(w, balloonError(err))
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) handleSetBalloon(w http.ResponseWriter, r *http.Request) {
	var req BalloonRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	if req.Target == nil {
		// A missing target must not read as 0, which empties the balloon.
		s.fail(w, badRequest(`missing "target": the balloon size, e.g. "256M" or a byte count (0 empties the balloon)`))
		return
	}
	st, err := s.vm.SetBalloonTarget(uint64(*req.Target))
	if err != nil {
		s.fail(w, balloonError(err))
		return
	}
	s.log.Info("balloon target set", "target", req.Target.String())
	writeJSON(w, http.StatusOK, st)
}

// balloonError gives the balloon's refusals their status: a VM without a
// balloon is a 409 (its configuration does not allow the request), a
// target out of range a 400.
func balloonError(err error) error {
	switch {
	case errors.Is(err, vmm.ErrNoBalloon):
		return conflict("%v", err)
	case errors.Is(err, balloon.ErrTarget):
		return badRequest("%v", err)
	}
	return err
}

// httpError is an error with the HTTP status it answers with.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) error {
	return &httpError{http.StatusConflict, fmt.Sprintf(format, args...)}
}

// fail answers with err's status (500 when it has none).
func (s *Server) fail(w http.ResponseWriter, err error) {
	var he *httpError
	if errors.As(err, &he) {
		writeError(w, he.status, "%s", he.msg)
		return
	}
	// The VM refused because of its state (vmm.ErrState): the request made
	// no sense now, nothing failed.
	if errors.Is(err, vmm.ErrState) {
		writeError(w, http.StatusConflict, "%v", err)
		return
	}
	s.log.Error("request failed", "err", err)
	writeError(w, http.StatusInternalServerError, "%v", err)
}

// decodeBody reads one JSON object into v: at most MaxBodyBytes, no
// unknown fields (a misspelt field must not be silently ignored), nothing
// after the object.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if err := checkQuery(r.URL.Query()); err != nil {
		return err
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// Read on to the end: this catches a second value, and a body
		// that is too large after a small object.
		var extra json.RawMessage
		switch derr := dec.Decode(&extra); {
		case derr == io.EOF:
		case derr != nil:
			err = derr
		default:
			return badRequest("trailing data after the JSON object")
		}
	}
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooBig):
		return &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)}
	case errors.Is(err, io.EOF):
		return badRequest("empty request body: want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed JSON: unexpected end of the body")
	}
	var syntax *json.SyntaxError
	if errors.As(err, &syntax) {
		return badRequest("malformed JSON at byte %d: %v", syntax.Offset, err)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		if typ.Field == "" {
			return badRequest("request body is a JSON %s, want a JSON object", typ.Value)
		}
		return badRequest("field %q: got a JSON %s, want a %s", typ.Field, typ.Value, typ.Type.Kind())
	}
	// Unknown fields ("json: unknown field \"x\"") and trailing data.
	return badRequest("invalid request body: %v", err)
}

// checkQuery refuses query parameters an endpoint does not take, for the
// same reason as unknown body fields.
func checkQuery(q url.Values, allowed ...string) error {
	for k := range q {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			return badRequest("unknown query parameter %q", k)
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Every response type marshals; this is a bug, reported as such.
		status = http.StatusInternalServerError
		b, _ = json.Marshal(ErrorResponse{Error: "encoding the response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, ErrorResponse{Error: fmt.Sprintf(format, args...)})
}

// logRequests logs every request at debug level once it has been answered.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		s.log.Debug("API request", "method", r.Method, "path", r.URL.Path,
			"status", sw.status, "duration", time.Since(start))
	})
}

// statusWriter remembers the status of a response. Unwrap lets
// http.ResponseController reach the real writer's Flush and deadlines.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
