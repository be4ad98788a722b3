package api

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvmm/kvmm/vmm"
	"github.com/kvmm/kvmm/vmm/api/apitest"
)

func TestBalloonRoutes(t *testing.T) {
	f := apitest.New()
	f.EnableBalloon()
	ts := newTestServer(t, f)

	r := call(t, ts, "GET", "/vm/balloon", "")
	if r.status != http.StatusOK {
		t.Fatalf("GET: status %d: %s", r.status, r.body)
	}
	st := decode[vmm.BalloonStats](t, r)
	if st.Kind != "vmware" || st.TargetBytes != 0 || st.VMware == nil || !st.VMware.Negotiated {
		t.Errorf("GET: %+v", st)
	}
	if _, ok := st.Commands["batched_2m_lock"]; !ok {
		t.Errorf("commands lack batched_2m_lock: %v", st.Commands)
	}
	if _, ok := st.Errors["page_already_held"]; !ok {
		t.Errorf("errors lack page_already_held: %v", st.Errors)
	}

	for _, tc := range []struct {
		body string
		want uint64
	}{
		{`{"target":"64M"}`, 64 << 20},
		{`{"target":"6M"}`, 6 << 20},
		{`{"target":4096}`, 4096},
		{`{"target":"128M"}`, 128 << 20}, // all of RAM: allowed, if unwise
		{`{"target":0}`, 0},
	} {
		r := call(t, ts, "PUT", "/vm/balloon", tc.body)
		if r.status != http.StatusOK {
			t.Errorf("PUT %s: status %d: %s", tc.body, r.status, r.body)
			continue
		}
		st := decode[vmm.BalloonStats](t, r)
		if st.TargetBytes != tc.want {
			t.Errorf("PUT %s: target %d, want %d", tc.body, st.TargetBytes, tc.want)
		}
		if got, _ := f.BalloonStats(); got.TargetBytes != tc.want {
			t.Errorf("PUT %s: the VM's target is %d", tc.body, got.TargetBytes)
		}
	}
	// The fake guest gave back 64M, then grew from 4K to 128M.
	if got, _ := f.BalloonStats(); got.Held2M != 0 || got.ReturnedBytes != 64<<20+128<<20-4096 {
		t.Errorf("fake balloon after the sequence: %+v", got)
	}
}

func TestBalloonRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, method, body string
		setup              func(*apitest.FakeVM)
		status             int
		mention            string
	}{
		{"no balloon GET", "GET", "", nil, 409, "no memory balloon"},
		{"no balloon PUT", "PUT", `{"target":"16M"}`, nil, 409, "no memory balloon"},
		{"stopped", "PUT", `{"target":"16M"}`, func(f *apitest.FakeVM) { f.StopWith(0, "off") }, 409, "stopped"},
		{"missing target", "PUT", `{}`, nil, 400, `missing "target"`},
		{"null target", "PUT", `{"target":null}`, nil, 400, `missing "target"`},
		{"not 4K", "PUT", `{"target":"1K"}`, nil, 400, "4 KiB"},
		{"more than RAM", "PUT", `{"target":"256M"}`, nil, 400, "more than the guest's 128 MiB"},
		{"junk size", "PUT", `{"target":"lots"}`, nil, 400, `"lots"`},
		{"negative", "PUT", `{"target":-4096}`, nil, 400, "-4096"},
		{"unknown field", "PUT", `{"target":"16M","size":1}`, nil, 400, `"size"`},
		{"query", "GET", "", nil, 400, `"x"`},
		{"DELETE", "DELETE", "", nil, 405, "DELETE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := apitest.New()
			if !strings.HasPrefix(tc.name, "no balloon") {
				f.EnableBalloon()
			}
			if tc.setup != nil {
				tc.setup(f)
			}
			ts := newTestServer(t, f)
			path := "/vm/balloon"
			if tc.name == "query" {
				path += "?x=1"
			}
			r := call(t, ts, tc.method, path, tc.body)
			if r.status != tc.status {
				t.Errorf("status %d, want %d (%s)", r.status, tc.status, r.body)
			}
			if msg := r.errorText(); !strings.Contains(msg, tc.mention) {
				t.Errorf("error %q does not mention %q", msg, tc.mention)
			}
			if st, err := f.BalloonStats(); err == nil && st.TargetBytes != 0 {
				t.Errorf("a refused request set the target to %d", st.TargetBytes)
			}
		})
	}
}

func TestBalloonClient(t *testing.T) {
	f := apitest.New()
	f.EnableBalloon()
	sock := filepath.Join(shortTempDir(t), "vm.sock")
	srv := NewServer(f, Options{Logger: testLogger(t)})
	if err := srv.Start(sock); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := NewClient(sock)
	defer c.Close()
	ctx := context.Background()
	st, err := c.SetBalloonTarget(ctx, 32<<20)
	if err != nil || st.TargetBytes != 32<<20 {
		t.Fatalf("SetBalloonTarget: %+v, %v", st, err)
	}
	if st, err = c.Balloon(ctx); err != nil || st.HeldBytes != 32<<20 || st.Held2M != 16 {
		t.Errorf("Balloon: %+v, %v", st, err)
	}
	_, err = c.SetBalloonTarget(ctx, 4097)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Errorf("SetBalloonTarget(4097): %v, want a 400", err)
	}
}
