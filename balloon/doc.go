// Package balloon is the host side of guest memory balloons.
//
// A balloon driver in the guest allocates pages it will not use and hands
// them to the host, which gives the memory behind them back to the host
// kernel; the host sets how much the balloon should hold (its target).
// This package has:
//
//   - Ledger: what every balloon shares, whatever its transport: the
//     target, the set of guest pages the guest has handed over (4 KiB and
//     2 MiB), the reclaim itself (Memory.Discard, madvise MADV_DONTNEED) and
//     the counters (Metrics, Stats). The VMware balloon uses it, and so will
//     virtio-balloon (its inflate and deflate queues are Inflate and Deflate
//     of 4 KiB pages).
//   - VMware: the vmw_balloon protocol on I/O port 0x5670 (Linux
//     drivers/misc/vmw_balloon.c, guest-protocols.md §1.3): capability
//     negotiation, the target, single and batched lock/unlock of 4 KiB and
//     2 MiB pages with per-page status codes written back into the batch
//     page, the reset protocol.
//   - Backdoor: the VMware backdoor on I/O port 0x5658 that Linux's
//     arch/x86/kernel/cpu/vmware.c calls at boot (GETVERSION, GETHZ,
//     STEALCLOCK, GETVCPU_INFO; §1.2).
//
// Nothing here touches KVM: a call is a Regs in, a Regs out. The VMM moves
// the registers between the vCPU and Serve (vmm/balloon.go), so the
// protocols are unit tested and fuzzed without /dev/kvm. Every guest value
// is checked before use: a malformed request is answered with the
// protocol's error status and counted, never a panic.
//
// QEMU has no VMware balloon (its vmport answers only the backdoor), so
// there is no QEMU oracle for this package: the tests and the test guest
// testdata/guests/vmwballoon.S follow the driver's source instead.
package balloon
