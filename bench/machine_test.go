package bench

import "testing"

const cpuinfo = `processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Processor
flags		: fpu vme de pse tsc msr
bogomips	: 4400.00

processor	: 1
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Processor
flags		: fpu vme de pse tsc msr
`

func TestParseCPUInfo(t *testing.T) {
	got := ParseCPUInfo([]byte(cpuinfo))
	want := CPUInfo{Model: "Intel(R) Xeon(R) Processor", CPUs: 2}
	if got != want {
		t.Errorf("ParseCPUInfo = %+v, want %+v", got, want)
	}
	got = ParseCPUInfo([]byte("processor : 0\nflags : fpu vmx sse\n"))
	if got.HWVirt != "vmx" || got.CPUs != 1 {
		t.Errorf("with vmx: %+v", got)
	}
}

func TestParseMemTotal(t *testing.T) {
	got, err := ParseMemTotal([]byte("MemTotal:       24731648 kB\nMemFree:        21742592 kB\n"))
	if err != nil || got != 24731648<<10 {
		t.Errorf("ParseMemTotal = %d, %v", got, err)
	}
	for _, bad := range []string{"MemFree: 1 kB\n", "MemTotal: 12\n", "MemTotal: x kB\n"} {
		if _, err := ParseMemTotal([]byte(bad)); err == nil {
			t.Errorf("ParseMemTotal(%q): no error", bad)
		}
	}
}
