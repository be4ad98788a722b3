package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"

	"github.com/kvmm/kvmm/vmm"
)

// clientBaseURL is the URL prefix of every request; the host part is
// ignored, the transport always dials the socket.
const clientBaseURL = "http://kvmm"

// maxErrorBody bounds how much of an error response the client reads.
const maxErrorBody = 64 << 10

// Client talks to one VM's API socket. It is safe for concurrent use.
// Every method takes a context: cancelling it ends the request (and an
// event stream).
type Client struct {
	sock string
	http *http.Client
}

// NewClient returns a client for the API socket at sockPath. Nothing is
// dialled until the first request.
func NewClient(sockPath string) *Client {
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", sockPath)
		},
		DisableCompression: true,
	}
	// No Client.Timeout: it would cut event streams; callers bound
	// requests with their context.
	return &Client{sock: sockPath, http: &http.Client{Transport: tr}}
}

// Socket is the socket path the client dials.
func (c *Client) Socket() string { return c.sock }

// Close closes the client's idle connections; requests and event streams
// in progress are not affected, and the client stays usable.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Error is an error answer from the server.
type Error struct {
	// Status is the HTTP status: 400, 404, 405, 409, 413, 500.
	Status int
	// Message is the server's {"error": ...} text.
	Message string
}

func (e *Error) Error() string { return e.Message }

// VM returns the VM's state and configuration (GET /vm).
func (c *Client) VM(ctx context.Context) (VMInfo, error) {
	var out VMInfo
	return out, c.do(ctx, http.MethodGet, "/vm", nil, http.StatusOK, &out)
}

// SetState asks for a state (PUT /vm/state): vmm.StatePaused or
// vmm.StateRunning.
func (c *Client) SetState(ctx context.Context, state vmm.State) (StateResponse, error) {
	var out StateResponse
	return out, c.do(ctx, http.MethodPut, "/vm/state", StateRequest{State: state}, http.StatusOK, &out)
}

// Pause parks every vCPU.
func (c *Client) Pause(ctx context.Context) (StateResponse, error) {
	return c.SetState(ctx, vmm.StatePaused)
}

// Resume lets a paused VM run again.
func (c *Client) Resume(ctx context.Context) (StateResponse, error) {
	return c.SetState(ctx, vmm.StateRunning)
}

// Power performs a power action (PUT /vm/power). It returns once the VM
// has accepted it; the event stream says when the VM has stopped.
func (c *Client) Power(ctx context.Context, action PowerAction) (PowerResponse, error) {
	var out PowerResponse
	return out, c.do(ctx, http.MethodPut, "/vm/power", PowerRequest{Action: action}, http.StatusAccepted, &out)
}

// Metrics returns the VM's counters (GET /vm/metrics); top limits the I/O
// port and MMIO lists to the busiest ranges (0: all).
func (c *Client) Metrics(ctx context.Context, top int) (vmm.Metrics, error) {
	path := "/vm/metrics"
	if top > 0 {
		path += "?top=" + strconv.Itoa(top)
	}
	var out vmm.Metrics
	return out, c.do(ctx, http.MethodGet, path, nil, http.StatusOK, &out)
}

// PCIDump returns the VM's PCI configuration spaces in `lspci -x` format.
func (c *Client) PCIDump(ctx context.Context, extended bool) (string, error) {
	path := "/vm/pci"
	if extended {
		path += "?extended=true"
	}
	resp, err := c.send(ctx, http.MethodGet, path, nil, http.StatusOK)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s on %s: %w", path, c.sock, err)
	}
	return string(b), nil
}

// Balloon returns the memory balloon's target, pages, reclaimed memory and
// counters (GET /vm/balloon).
func (c *Client) Balloon(ctx context.Context) (vmm.BalloonStats, error) {
	var out vmm.BalloonStats
	return out, c.do(ctx, http.MethodGet, "/vm/balloon", nil, http.StatusOK, &out)
}

// SetBalloonTarget sets the balloon size, the memory the guest's balloon
// driver should hand to the host (PUT /vm/balloon); it returns the stats
// right after, before the guest has followed.
func (c *Client) SetBalloonTarget(ctx context.Context, target vmm.Size) (vmm.BalloonStats, error) {
	var out vmm.BalloonStats
	return out, c.do(ctx, http.MethodPut, "/vm/balloon", BalloonRequest{Target: &target}, http.StatusOK, &out)
}

// OpenAPI returns the server's OpenAPI description.
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	resp, err := c.send(ctx, http.MethodGet, "/openapi.yaml", nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET /openapi.yaml on %s: %w", c.sock, err)
	}
	return b, nil
}

// EventStream is an open GET /vm/events: Next returns one event at a time.
type EventStream struct {
	body io.ReadCloser
	dec  *json.Decoder
}

// Events opens the event stream. Its first event is the VM's current
// state. Close it when done; cancelling ctx ends it too.
func (c *Client) Events(ctx context.Context) (*EventStream, error) {
	resp, err := c.send(ctx, http.MethodGet, "/vm/events", nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	return &EventStream{body: resp.Body, dec: json.NewDecoder(bufio.NewReader(resp.Body))}, nil
}

// Next blocks for the next event. It returns io.EOF when the stream ended
// cleanly: after the event with state "stopped", or because the server
// closed. After a cancel it returns an error wrapping the context's.
func (s *EventStream) Next() (vmm.Event, error) {
	var e vmm.Event
	if err := s.dec.Decode(&e); err != nil {
		if errors.Is(err, io.EOF) {
			return e, io.EOF
		}
		return e, fmt.Errorf("reading the event stream: %w", err)
	}
	return e, nil
}

// Close ends the stream.
func (s *EventStream) Close() error { return s.body.Close() }

// do sends a request and decodes a JSON answer with status want into out.
func (c *Client) do(ctx context.Context, method, path string, in any, want int, out any) error {
	resp, err := c.send(ctx, method, path, in, want)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s on %s: decoding the answer: %w", method, path, c.sock, err)
	}
	return nil
}

// send performs a request; an answer other than want becomes an *Error.
func (c *Client) send(ctx context.Context, method, path string, in any, want int) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encoding the request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, clientBaseURL+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: %w", method, path, c.sock, unwrapURLError(err))
	}
	if resp.StatusCode == want {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var e ErrorResponse
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = fmt.Sprintf("%s %s: unexpected answer %s", method, path, resp.Status)
	}
	return nil, &Error{Status: resp.StatusCode, Message: e.Error}
}

// unwrapURLError drops *url.Error's "Get \"http://kvmm/vm\":" prefix,
// which names a URL that does not exist outside this package.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}
