package net

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/kvmm/kvmm/devices/virtio"
)

// handleCtrl is the control queue's worker (spec §5.1.6.5). It runs in
// user space with either data path: vhost-net has no control queue.
func (s *session) handleCtrl(q *virtio.Queue) {
	_ = q.Drain(&s.chain, s.ctrlRequest)
}

// errNoAck: a request without room for its ack byte cannot be answered,
// which is a broken driver (DEVICE_NEEDS_RESET), not a refused command.
var errNoAck = errors.New("control request without a device-writable ack byte")

// ctrlRequest reads {class, command, data} from the readable buffers,
// carries the command out and writes the one-byte ack.
func (s *session) ctrlRequest(c *virtio.Chain) (uint32, error) {
	if c.WriteLen < 1 {
		return 0, errNoAck
	}
	s.d.m.ctrlCommands.Add(1)
	var req [2 + ctrlMaxData]byte
	n, err := io.ReadFull(c.NewReader(s.mem), req[:min(int(c.ReadLen), len(req))])
	if err != nil {
		return 0, fmt.Errorf("reading a control request: %w", err)
	}
	ack := byte(ctrlErr)
	switch {
	case n < 2:
		s.d.warn.Warn("virtio-net: control request shorter than its header", "len", c.ReadLen)
	case c.ReadLen > uint32(len(req)):
		s.d.warn.Warn("virtio-net: control request too long", "class", req[0], "cmd", req[1], "len", c.ReadLen)
	default:
		if err := s.command(req[0], req[1], req[2:n]); err != nil {
			s.d.warn.Warn("virtio-net: control command refused", "class", req[0], "cmd", req[1], "err", err)
		} else {
			ack = ctrlOK
		}
	}
	if ack != ctrlOK {
		s.d.m.ctrlErrors.Add(1)
	}
	if _, err := c.NewWriter(s.mem).Write([]byte{ack}); err != nil {
		return 0, fmt.Errorf("writing the control ack: %w", err)
	}
	return 1, nil
}

// command carries out one control command; an error is answered
// VIRTIO_NET_ERR.
func (s *session) command(class, cmd byte, data []byte) error {
	switch {
	case class == ctrlClassMQ && cmd == ctrlMQVQPairsSet:
		if s.features&FeatureMQ == 0 {
			return errors.New("VQ_PAIRS_SET without VIRTIO_NET_F_MQ")
		}
		if len(data) != 2 {
			return fmt.Errorf("VQ_PAIRS_SET with %d bytes of data, want 2", len(data))
		}
		n := int(binary.LittleEndian.Uint16(data))
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.stopped {
			return errors.New("device resetting")
		}
		if err := s.setPairs(n); err != nil {
			return fmt.Errorf("VQ_PAIRS_SET %d: %w", n, err)
		}
		s.d.log.Info("virtio-net: queue pairs in use", "pairs", n)
		return nil
	case class == ctrlClassGuestOffloads && cmd == ctrlGuestOffloadsSet:
		if s.features&FeatureCtrlGuestOffloads == 0 {
			return errors.New("GUEST_OFFLOADS_SET without VIRTIO_NET_F_CTRL_GUEST_OFFLOADS")
		}
		if len(data) != 8 {
			return fmt.Errorf("GUEST_OFFLOADS_SET with %d bytes of data, want 8", len(data))
		}
		off := binary.LittleEndian.Uint64(data)
		// Only offloads the driver negotiated can be switched (spec
		// §5.1.6.5.6.1), and their dependencies still hold.
		if extra := off &^ (s.features & guestOffloads); extra != 0 {
			return fmt.Errorf("GUEST_OFFLOADS_SET %#x: %#x not negotiated", off, extra)
		}
		if err := s.d.ValidateFeatures(off); err != nil {
			return fmt.Errorf("GUEST_OFFLOADS_SET %#x: %w", off, err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := s.d.host.SetOffload(off); err != nil {
			return fmt.Errorf("GUEST_OFFLOADS_SET %#x: %w", off, err)
		}
		// Frames already queued on the tap may still carry what the old
		// set allowed; the receive path checks each against this.
		s.offloads.Store(off)
		return nil
	}
	return fmt.Errorf("unsupported command (class %d, command %d)", class, cmd)
}
