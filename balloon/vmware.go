package balloon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
)

// Regs are the registers of one backdoor or balloon call: what the guest
// put in them before its `inl (%dx)`, and the answer. Only the low 32 bits
// of RAX reach the guest: a 4-byte IN zero-extends EAX into RAX.
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI uint64
}

// The balloon port (drivers/misc/vmw_balloon.c, guest-protocols.md §1.3).
// The guest calls with EAX = magic, RCX = command, RBX = arg1, RSI = arg2;
// the host answers the status in EAX, a result (the target) in RBX and, for
// START only, the granted capabilities in RCX.
const (
	// BalloonPort is VMW_BALLOON_HV_PORT.
	BalloonPort = 0x5670
	// BalloonMagic is VMW_BALLOON_HV_MAGIC ("omlE").
	BalloonMagic = 0x456c6d6f
)

// Commands (enum vmballoon_cmd_type). There is no command 5.
const (
	CmdStart           = 0
	CmdGetTarget       = 1
	CmdLock            = 2
	CmdUnlock          = 3
	CmdGuestID         = 4
	CmdBatchedLock     = 6
	CmdBatchedUnlock   = 7
	CmdBatched2MLock   = 8
	CmdBatched2MUnlock = 9
	CmdDoorbellSet     = 10
	numCommands        = 11
)

// VMwareCommands names the commands for Stats.Commands, indexed by number
// (the missing command 5 included, so that the index is the number).
var VMwareCommands = []string{
	CmdStart:           "start",
	CmdGetTarget:       "get_target",
	CmdLock:            "lock",
	CmdUnlock:          "unlock",
	CmdGuestID:         "guest_id",
	5:                  "cmd5",
	CmdBatchedLock:     "batched_lock",
	CmdBatchedUnlock:   "batched_unlock",
	CmdBatched2MLock:   "batched_2m_lock",
	CmdBatched2MUnlock: "batched_2m_unlock",
	CmdDoorbellSet:     "vmci_doorbell_set",
}

// Status codes (enum vmballoon_error_codes), in EAX and in the low 5 bits
// of each batch entry.
const (
	StatusSuccess     = 0
	StatusCmdInvalid  = 1
	StatusPPNInvalid  = 2
	StatusPPNLocked   = 3
	StatusPPNUnlocked = 4
	StatusPPNPinned   = 5
	StatusNotNeeded   = 6
	StatusReset       = 7
	StatusBusy        = 8
	// StatusSuccessWithCaps answers START: the granted capabilities are
	// in RCX. (A plain StatusSuccess would mean "BASIC only" to the guest.)
	StatusSuccessWithCaps = 0x03000000
)

// Capabilities (enum vmwballoon_capabilities); bit 0 is reserved.
const (
	CapBasic           = 1 << 1 // LOCK, UNLOCK
	CapBatched         = 1 << 2 // BATCHED_LOCK, BATCHED_UNLOCK
	CapBatched2M       = 1 << 3 // BATCHED_2M_*, only together with CapBatched
	CapSignalledWakeup = 1 << 4 // VMCI doorbell
	Cap64BitTarget     = 1 << 5 // GET_TARGET limit and answer beyond 32 bits

	// HostCaps is what kvmm grants: all but SIGNALLED_WAKEUP, whose
	// doorbell needs a VMCI device (PCI 15ad:0740) kvmm does not have. The
	// guest then polls GET_TARGET about once a second instead.
	HostCaps = CapBasic | CapBatched | CapBatched2M | Cap64BitTarget
)

const (
	// BatchMax is the most entries a batch page holds: 512 u64 in 4 KiB.
	BatchMax = int(Page4K / 8)
	// A batch entry (struct vmballoon_batch_entry) is the page's PFN in
	// bits 12-63 and the host's status in bits 0-4; bits 5-11 are
	// reserved. So an entry is the page's address with the status in it.
	entryStatusMask = 0x1f
	entryAddrMask   = ^uint64(Page4K - 1)
	// pfnLimit bounds a PFN so that pfn << 12 cannot overflow.
	pfnLimit = 1 << 52
	// vmciInvalidID is VMCI_INVALID_ID (~0U): the arguments of the
	// doorbell cleanup the driver sends on every reset.
	vmciInvalidID = math.MaxUint32
	// unclaimed is what a port without a listener reads: the answer to a
	// call without the magic.
	unclaimed = math.MaxUint32
)

// VMware serves the vmw_balloon protocol on BalloonPort. Its state is the
// negotiation with the guest's driver; the pages and the target are in the
// Ledger. Safe for concurrent use (several vCPUs may call).
type VMware struct {
	ledger *Ledger
	mem    Memory
	log    *slog.Logger

	mu           sync.Mutex
	negotiated   bool   // a START was answered since the last reset request
	caps         uint64 // granted by the last START
	guestID      uint64
	resetPending bool   // RequestReset: answer StatusReset until the next START
	limit        uint64 // the guest's RAM in frames, from its last GET_TARGET
	resets       uint64 // StatusReset answers
	starts       uint64
	buf          [Page4K]byte     // the batch page being served, copied out of RAM
	entries      [BatchMax]uint64 // its entries
}

// VMwareState is the protocol state with the guest's driver.
type VMwareState struct {
	// Negotiated: the guest's last START was answered and no reset is
	// pending, so lock and unlock requests are served.
	Negotiated bool `json:"negotiated"`
	// Capabilities are those granted at the last START (Cap* bits).
	Capabilities uint64 `json:"capabilities"`
	// GuestID is what GUEST_ID reported (1: Linux).
	GuestID uint64 `json:"guest_id"`
	// ResetPending: the host asked for a reset the guest has not done yet.
	ResetPending bool `json:"reset_pending"`
	// Starts counts START commands, Resets the ERROR_RESET answers.
	Starts uint64 `json:"starts"`
	Resets uint64 `json:"resets"`
}

// NewVMware serves the balloon protocol over ledger's pages in mem.
func NewVMware(ledger *Ledger, mem Memory, log *slog.Logger) *VMware {
	if log == nil {
		log = slog.Default()
	}
	return &VMware{ledger: ledger, mem: mem, log: log}
}

// Ledger is the balloon's accounting.
func (v *VMware) Ledger() *Ledger { return v.ledger }

// State is the protocol state.
func (v *VMware) State() VMwareState {
	v.mu.Lock()
	defer v.mu.Unlock()
	return VMwareState{Negotiated: v.negotiated && !v.resetPending, Capabilities: v.caps, GuestID: v.guestID,
		ResetPending: v.resetPending, Starts: v.starts, Resets: v.resets}
}

// RequestReset makes the guest's driver restart the protocol: every
// command but START, GUEST_ID and VMCI_DOORBELL_SET is answered with
// ERROR_RESET until the guest sends START, which also forgets every held
// page (the driver pops them without UNLOCK). A host does this when its
// own balloon state is gone, e.g. after restoring a snapshot.
func (v *VMware) RequestReset() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.resetPending = true
}

// Serve answers one 4-byte IN on BalloonPort: r holds the guest's
// registers and receives the answer.
func (v *VMware) Serve(r *Regs) {
	if uint32(r.RAX) != BalloonMagic {
		// Not a balloon call: read like a port nobody decodes.
		v.ledger.CountError(KindBadMagic)
		r.RAX = unclaimed
		return
	}
	cmd := r.RCX
	if cmd < numCommands {
		v.ledger.CountCommand(int(cmd))
	} else {
		v.ledger.CountCommand(-1)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	switch cmd {
	case CmdStart:
		v.start(r)
		return
	case CmdGuestID:
		// Informational; the driver sends it right after START.
		v.guestID = r.RBX
		r.RAX = StatusSuccess
		return
	case CmdDoorbellSet:
		r.RAX = uint64(v.doorbellSet(r.RBX, r.RSI))
		return
	case CmdGetTarget, CmdLock, CmdUnlock, CmdBatchedLock, CmdBatchedUnlock, CmdBatched2MLock, CmdBatched2MUnlock:
	default:
		v.ledger.CountError(KindBadCommand)
		r.RAX = StatusCmdInvalid
		return
	}
	// The target-carrying commands: the driver sets its target from RBX
	// after each of them that succeeds (VMW_BALLOON_CMD_WITH_TARGET_MASK).
	if !v.negotiated || v.resetPending {
		v.ledger.CountError(KindReset)
		v.resets++
		r.RAX = StatusReset
		return
	}
	var status uint32
	switch cmd {
	case CmdGetTarget:
		status = v.getTarget(r)
	case CmdLock, CmdUnlock:
		status = v.single(cmd == CmdLock, r.RBX)
	default:
		status = v.batched(cmd, r.RBX, r.RSI)
	}
	// The driver only reads RBX after a success; it is the target after
	// every answer all the same, so that no reply leaves the guest's
	// argument there to be mistaken for one.
	r.RAX = uint64(status)
	r.RBX = v.targetFrames()
}

// start negotiates: grant what the guest asks for among HostCaps, and
// forget the pages of the previous session (a START follows a reset, or a
// driver load or unload, and in every case the driver has popped its
// pages without UNLOCK).
func (v *VMware) start(r *Regs) {
	granted := r.RBX & HostCaps
	if granted&CapBatched == 0 {
		// 2 MiB pages only travel in batches.
		granted &^= CapBatched2M
	}
	v.ledger.Reset()
	v.negotiated, v.resetPending, v.caps, v.limit = true, false, granted, 0
	v.starts++
	v.log.Info("VMware balloon: START", "requested", fmt.Sprintf("%#x", r.RBX), "granted", fmt.Sprintf("%#x", granted))
	r.RAX = StatusSuccessWithCaps
	r.RCX = granted
}

// doorbellSet answers VMCI_DOORBELL_SET. The driver sends (~0, ~0) on
// every reset to drop a doorbell it may have, before START and whatever
// was granted: that succeeds (there is nothing to drop). A real doorbell is
// refused, SIGNALLED_WAKEUP never being granted. Never StatusReset: the
// driver sends this command inside its reset sequence, and a reset answer
// there would make it reset forever.
func (v *VMware) doorbellSet(contextID, resource uint64) uint32 {
	if uint32(contextID) == vmciInvalidID && uint32(resource) == vmciInvalidID {
		return StatusSuccess
	}
	v.ledger.CountError(KindBadCommand)
	return StatusCmdInvalid
}

// getTarget answers GET_TARGET; RBX is the guest's RAM in frames
// (totalram_pages), which must fit 32 bits unless 64-bit targets were
// granted, and bounds the answer: a balloon cannot take more than the guest
// has.
func (v *VMware) getTarget(r *Regs) uint32 {
	limit := r.RBX
	if v.caps&Cap64BitTarget == 0 && limit > math.MaxUint32 {
		v.ledger.CountError(KindBadCommand)
		return StatusCmdInvalid
	}
	v.limit = limit
	return StatusSuccess
}

// targetFrames is the target in 4 KiB frames: at most the guest's RAM as
// it last reported it (0: not reported), and at most 32 bits unless 64-bit
// targets were granted. Serve puts it in RBX after every target-carrying
// command that succeeds.
func (v *VMware) targetFrames() uint64 {
	t := v.ledger.Target() / uint64(Page4K)
	if v.limit != 0 {
		t = min(t, v.limit)
	}
	if v.caps&Cap64BitTarget == 0 {
		t = min(t, math.MaxUint32)
	}
	return t
}

// single serves LOCK and UNLOCK of one 4 KiB page: RBX is its PFN, which
// the driver keeps below 2^32 in this mode. The page's status is the
// command's.
func (v *VMware) single(lock bool, pfn uint64) uint32 {
	if v.caps&CapBasic == 0 {
		v.ledger.CountError(KindBadCommand)
		return StatusCmdInvalid
	}
	if pfn > math.MaxUint32 {
		v.ledger.CountError(KindNotRAM)
		return StatusPPNInvalid
	}
	return v.page(lock, pfn<<12, Page4K)
}

// batched serves the four batched commands: batchPFN is the PFN of the
// batch page, n its number of entries. Each entry gets its own status; the
// command's status is an error only when the batch itself cannot be read.
func (v *VMware) batched(cmd, batchPFN, n uint64) uint32 {
	size, need := Page4K, uint64(CapBatched)
	if cmd == CmdBatched2MLock || cmd == CmdBatched2MUnlock {
		size, need = Page2M, CapBatched|CapBatched2M
	}
	lock := cmd == CmdBatchedLock || cmd == CmdBatched2MLock
	if v.caps&need != need {
		v.ledger.CountError(KindBadCommand)
		return StatusCmdInvalid
	}
	entries, status := v.readBatch(batchPFN, n)
	if status != StatusSuccess {
		return status
	}
	for i, e := range entries {
		entries[i] = e&^entryStatusMask | uint64(v.page(lock, e&entryAddrMask, size))
	}
	if err := v.writeBatch(batchPFN, entries); err != nil {
		// readBatch checked the page is RAM; memory does not shrink.
		v.log.Error("VMware balloon: writing the batch statuses back", "err", err)
	}
	return StatusSuccess
}

// readBatch copies n entries of the batch page at batchPFN out of guest RAM.
// Working on a copy means a guest rewriting the page from another vCPU
// meanwhile cannot make the host act on entries it did not check.
func (v *VMware) readBatch(batchPFN, n uint64) ([]uint64, uint32) {
	if n > uint64(BatchMax) {
		v.ledger.CountError(KindBadBatch)
		return nil, StatusCmdInvalid
	}
	if batchPFN >= pfnLimit || !v.mem.Contains(batchPFN<<12, uint64(Page4K)) {
		v.ledger.CountError(KindBadBatch)
		return nil, StatusPPNInvalid
	}
	buf := v.buf[:n*8]
	if err := v.mem.Read(batchPFN<<12, buf); err != nil {
		v.ledger.CountError(KindBadBatch)
		return nil, StatusPPNInvalid
	}
	entries := v.entries[:n]
	for i := range entries {
		entries[i] = binary.LittleEndian.Uint64(buf[i*8:])
	}
	return entries, StatusSuccess
}

func (v *VMware) writeBatch(batchPFN uint64, entries []uint64) error {
	buf := v.buf[:len(entries)*8]
	for i, e := range entries {
		binary.LittleEndian.PutUint64(buf[i*8:], e)
	}
	return v.mem.Write(batchPFN<<12, buf)
}

// page locks or unlocks one page and returns its status, as VMware does:
// not RAM or misaligned: PPN_INVALID; locking a locked page: PPN_LOCKED;
// unlocking one that is not locked: PPN_UNLOCKED.
func (v *VMware) page(lock bool, gpa uint64, size PageSize) uint32 {
	var err error
	if lock {
		err = v.ledger.Inflate(gpa, size)
	} else {
		err = v.ledger.Deflate(gpa, size)
	}
	switch {
	case err == nil:
		return StatusSuccess
	case errors.Is(err, ErrHeld):
		return StatusPPNLocked
	case errors.Is(err, ErrNotHeld):
		return StatusPPNUnlocked
	}
	return StatusPPNInvalid
}
