// Package vhost is kvmm's host side of virtio-net: the vhost-net kernel ABI
// (NetBackend) and the host interfaces a virtio-net device sits on (Tap:
// tun/tap devices and macvtaps, created and removed through netlink).
// It knows nothing of virtqueue contents; devices/virtio parses rings and
// hands this package addresses, eventfds and features.
//
// The pieces, in the order a VM uses them:
//
//   - ParseNetSpec turns --net tap=NAME|auto[,...] or macvtap=PARENT[,...]
//     into a NetSpec; Choose decides vhost=auto|on|off against Available.
//   - Open (OpenTap, OpenMacvtap) brings up the interface with one queue fd
//     per queue pair, each carrying a 12-byte vnet header, and registers its
//     removal in the VM's Cleanup.
//   - With vhost, OpenNet opens one /dev/vhost-net instance per queue pair;
//     at the guest's DRIVER_OK the device model calls Start with the rings'
//     guest addresses, the KVM ioeventfd (kick) and irqfd (call) eventfds
//     and the queue fds; on a device reset, S3 included, Stop and then
//     Start again. Without vhost the device model reads and writes frames
//     on the Queues itself.
//   - After the guest negotiates, Tap.SetOffload(acked) enables the
//     offloads the guest can receive.
//   - Cleanup.Run on every exit path undoes all of it (see Cleanup).
//
// The kernel ABI follows guest-protocols.md §4 (the shared protocol
// reference) and the Linux 6.1 UAPI headers; uapi_test.go pins every ioctl
// number and struct layout.
package vhost
