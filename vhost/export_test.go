package vhost

// Unexported names the external tests (package vhost_test, which uses
// internal/netnstest, itself an importer of vhost) need.
const (
	MacvtapNamePrefix = macvtapNamePrefix
)

var OpenMacvtapQueue = openMacvtapQueue

// SetOffloadFlags is t.setOffloadFlags.
func (t *Tap) SetOffloadFlags(flags uint) error { return t.setOffloadFlags(flags) }

// CloseFile closes q's file.
func (q *Queue) CloseFile() error { return q.f.Close() }
