package api

import "github.com/kvmm/kvmm/vmm"

// The real VM is what the server drives; this fails to compile the day
// *vmm.VM and VMController drift apart.
var _ VMController = (*vmm.VM)(nil)
