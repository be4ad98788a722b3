package vmm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		err  bool
	}{
		{"512M", 512 << 20, false},
		{"2G", 2 << 30, false},
		{"2GiB", 2 << 30, false},
		{"4096K", 4 << 20, false},
		{"1048576", 1 << 20, false},
		{"1T", 1 << 40, false},
		{"", 0, true},
		{"M", 0, true},
		{"12X", 0, true},
		{"-1G", 0, true},
		{"1.5G", 0, true},
		{"99999999999999999999G", 0, true},
		{"17179869184G", 0, true}, // overflows uint64
	} {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestSizeJSONRoundTrip(t *testing.T) {
	for _, s := range []Size{512 << 20, 3 << 30, 4096, 1000} {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back Size
		if err := json.Unmarshal(b, &back); err != nil || back != s {
			t.Errorf("%v -> %s -> %v, %v", s, b, back, err)
		}
	}
	var s Size
	if err := json.Unmarshal([]byte(`1048576`), &s); err != nil || s != 1<<20 {
		t.Errorf("plain number: %v, %v", s, err)
	}
	if err := json.Unmarshal([]byte(`true`), &s); err == nil {
		t.Error("bool accepted as a size")
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigFile(t *testing.T) {
	p := writeFile(t, "vm.json", `{"memory":"1G","cpus":2,"cmdline":"console=ttyS0"}`)
	cfg, err := LoadConfigFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Memory != 1<<30 || cfg.CPUs != 2 || cfg.Cmdline != "console=ttyS0" || cfg.OnReboot != OnRebootReboot {
		t.Errorf("got %+v", cfg)
	}
	for name, body := range map[string]string{
		"unknown key": `{"memroy":"1G"}`,
		"bad size":    `{"memory":"lots"}`,
		"not json":    `memory=1G`,
		"trailing":    `{"cpus":1} {"cpus":2}`,
		"wrong type":  `{"cpus":"two"}`,
	} {
		if _, err := LoadConfigFile(writeFile(t, "bad.json", body)); err == nil {
			t.Errorf("%s: accepted %s", name, body)
		}
	}
	if _, err := LoadConfigFile(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestValidate(t *testing.T) {
	kernel := writeFile(t, "k", "x")
	ok := DefaultConfig()
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"tiny memory", func(c *Config) { c.Memory = 1 << 20 }, "memory"},
		{"unaligned memory", func(c *Config) { c.Memory = 64<<20 + 1 }, "multiple of 4K"},
		{"hugepage alignment", func(c *Config) { c.Memory = 64<<20 + 4096; c.HugePages = true }, "2M"},
		{"zero cpus", func(c *Config) { c.CPUs = 0 }, "cpus"},
		{"too many cpus", func(c *Config) { c.CPUs = 1000 }, "cpus"},
		{"cpu model", func(c *Config) { c.CPUModel = "pentium" }, "cpu model"},
		{"personality", func(c *Config) { c.Personality = "xen" }, "personality"},
		{"on-reboot", func(c *Config) { c.OnReboot = "panic" }, "on-reboot"},
		{"missing kernel", func(c *Config) { c.Kernel = "/nonexistent/vmlinux" }, "kernel"},
		{"kernel is a dir", func(c *Config) { c.Kernel = t.TempDir() }, "not a regular file"},
		{"initrd without kernel", func(c *Config) { c.Initrd = kernel }, "initrd"},
		{"long cmdline", func(c *Config) { c.Cmdline = strings.Repeat("a", 5000) }, "cmdline"},
	} {
		c := DefaultConfig()
		tc.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want mention of %q", tc.name, err, tc.want)
		}
	}
}
