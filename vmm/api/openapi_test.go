package api

import (
	"bufio"
	"bytes"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/kvmm/kvmm/vmm"
	"github.com/kvmm/kvmm/vmm/api/apitest"
)

// openAPIRoutes returns "METHOD /path" for every operation under the
// document's top-level "paths:" key. A line-based reader is enough for the
// file's block style (two-space indents: paths at 2, methods at 4) and
// needs no YAML library.
func openAPIRoutes(t *testing.T, doc []byte) []string {
	t.Helper()
	methods := map[string]bool{"get": true, "put": true, "post": true, "delete": true,
		"patch": true, "head": true, "options": true, "trace": true}
	var routes []string
	inPaths, path := false, ""
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if strings.ContainsRune(line[:indent], '\t') {
			t.Fatalf("openapi.yaml:%d: tab in indentation", n)
		}
		switch {
		case indent == 0:
			inPaths = trimmed == "paths:"
			path = ""
		case !inPaths:
		case indent == 2:
			path = strings.Trim(strings.TrimSuffix(trimmed, ":"), `"'`)
			if !strings.HasPrefix(path, "/") || !strings.HasSuffix(trimmed, ":") {
				t.Fatalf("openapi.yaml:%d: %q is not a path key", n, trimmed)
			}
		case indent == 4:
			key, _, _ := strings.Cut(trimmed, ":")
			if methods[key] {
				routes = append(routes, strings.ToUpper(key)+" "+path)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(routes)
	return routes
}

// TestOpenAPIMatchesRoutes: every route the server registers is in
// openapi.yaml, and every operation there is served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	documented := openAPIRoutes(t, OpenAPI())
	if len(documented) == 0 {
		t.Fatal("no operations found in openapi.yaml")
	}
	var served []string
	for _, r := range NewServer(apitest.New(), Options{}).routes {
		served = append(served, r.method+" "+r.path)
	}
	sort.Strings(served)
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("%s is served but not in openapi.yaml", r)
		}
	}
	for _, r := range documented {
		if !slices.Contains(served, r) {
			t.Errorf("%s is in openapi.yaml but not served", r)
		}
	}
	t.Logf("routes: %v", served)
}

// TestOpenAPIParser checks the reader on a small document, so a parser
// bug cannot make the consistency test pass vacuously.
func TestOpenAPIParser(t *testing.T) {
	doc := []byte(`openapi: 3.0.3
info:
  title: x
paths:
  /a:
    get:
      responses: {}
    put:
      summary: y
  "/b/c":
    parameters: []
    delete:
      responses: {}
components:
  schemas:
    get:
      type: string
`)
	got := openAPIRoutes(t, doc)
	want := []string{"DELETE /b/c", "GET /a", "PUT /a"}
	if !slices.Equal(got, want) {
		t.Errorf("routes %v, want %v", got, want)
	}
}

// TestOpenAPIConfigSchema keeps the Config schema true: every JSON field of
// vmm.Config is a property of it, and it has no property vmm.Config lacks.
func TestOpenAPIConfigSchema(t *testing.T) {
	doc := string(OpenAPI())
	start := strings.Index(doc, "\n    Config:\n")
	if start < 0 {
		t.Fatal("no Config schema in openapi.yaml")
	}
	block := doc[start+1:]
	props := strings.Index(block, "\n      properties:\n")
	if props < 0 {
		t.Fatal("Config schema has no properties")
	}
	block = block[props+len("\n      properties:\n"):]
	var inDoc []string
	for _, line := range strings.Split(block, "\n") {
		if line != "" && !strings.HasPrefix(line, "        ") {
			break // the next schema or section
		}
		if strings.HasPrefix(line, "        ") && !strings.HasPrefix(line, "         ") && strings.HasSuffix(line, ":") {
			inDoc = append(inDoc, strings.TrimSuffix(strings.TrimSpace(line), ":"))
		}
	}
	var inGo []string
	ty := reflect.TypeOf(vmm.Config{})
	for i := range ty.NumField() {
		tag := ty.Field(i).Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name != "" && name != "-" {
			inGo = append(inGo, name)
		}
	}
	slices.Sort(inDoc)
	slices.Sort(inGo)
	if !slices.Equal(inDoc, inGo) {
		t.Errorf("Config schema properties %v\n differ from vmm.Config's JSON fields %v", inDoc, inGo)
	}
}
