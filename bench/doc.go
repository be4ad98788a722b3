// Package bench is kvmm's benchmark runner (`make bench`, cmd/kvmm-bench):
// it runs the same test guests under kvmm, QEMU (-M microvm, KVM) and the
// bare-KVM floor (cmd/kvmm-floor), alternating between them round by round
// so that machine noise hits every system alike, and reports each figure as
// a median with its spread, the ratios between the systems and the targets
// they are judged against.
//
// A benchmark is one entry of the table Benchmarks returns: what it runs
// under each system, how one sample is measured, its rows (metrics) and
// targets, and when it must be skipped on this host. The runner (Run) and
// the report (Report.Markdown) know nothing about individual benchmarks.
//
// Only the pure logic (statistics, schedule, parsing, rendering) is covered
// by `go test`; the benchmarks themselves run only under `make bench`.
package bench
