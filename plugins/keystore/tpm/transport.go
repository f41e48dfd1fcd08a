package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// dialTimeout bounds connecting to a software TPM; a device opens at once.
const dialTimeout = 30 * time.Second

// openTPM opens the TPM at device: a character device, or a software TPM's
// command port (swtpm:HOST:PORT). It is opened for one operation and closed
// after it: the kernel's resource manager then flushes whatever the
// operation left loaded, and a software TPM, which serves one connection at
// a time, is free for the next user.
func openTPM(device string) (transport.TPMCloser, error) {
	if addr, ok := strings.CutPrefix(device, "swtpm:"); ok {
		c, err := net.DialTimeout("tcp", addr, dialTimeout)
		if err != nil {
			return nil, fmt.Errorf("no TPM at %s: %v: start the software TPM (swtpm socket --tpm2 --server type=tcp,port=PORT ...) or set %s to the TPM device", device, errors.Unwrap(err), EnvDevice)
		}
		return retrying{&streamTPM{c: c}}, nil
	}
	t, err := linuxtpm.Open(device)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("no TPM device %s: enable the TPM in the firmware and load its driver, or set %s (or device= in the key URI) to where it is", device, EnvDevice)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("TPM device %s: permission denied: run fleetprov as a user of the device's group (tss on Debian)", device)
	case errors.Is(err, linuxtpm.ErrFileIsNotDevice):
		return nil, fmt.Errorf("TPM device %s is not a device: set %s (or device= in the key URI) to the TPM's device, /dev/tpmrm0", device, EnvDevice)
	case err != nil:
		return nil, fmt.Errorf("TPM device %s: %w", device, err)
	}
	return retrying{t}, nil
}

// The TPM's "try again" answers (TPM 2.0 Part 2, TPM_RC warnings): the
// command did not start, and sent again, it runs. The kernel's resource
// manager resends them itself only in part, and a software TPM not at all.
const (
	rcRetry   = 0x922
	rcYielded = 0x908
	rcTesting = 0x90A
)

// retrying resends a command the TPM answered with a "try again", for at
// most a minute.
type retrying struct{ transport.TPMCloser }

func (r retrying) Send(cmd []byte) ([]byte, error) {
	deadline := time.Now().Add(time.Minute)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		rsp, err := r.TPMCloser.Send(cmd)
		if err != nil || len(rsp) < 10 || time.Now().After(deadline) {
			return rsp, err
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case rcRetry, rcYielded, rcTesting:
			time.Sleep(wait)
			continue
		}
		return rsp, nil
	}
}

// streamTPM speaks the TPM's own command stream over a connection, as
// swtpm's --server type=tcp port does: a command out, a response back,
// each starting with the TPM's 10-byte header that holds its size. (The
// TCG reference simulator, which go-tpm's tcp transport speaks to, wraps
// each command in a framing of its own instead.)
type streamTPM struct{ c net.Conn }

// maxResponse is the largest response a TPM sends (TPM2_PT_MAX_RESPONSE_SIZE
// is 4096 on the TPMs seen; some allow more).
const maxResponse = 1 << 16

func (s *streamTPM) Send(cmd []byte) ([]byte, error) {
	// A TPM answers in well under a minute; a stuck one must not hang the
	// run forever.
	if err := s.c.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		return nil, err
	}
	if _, err := s.c.Write(cmd); err != nil {
		return nil, fmt.Errorf("send to the TPM: %w", err)
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(s.c, hdr); err != nil {
		return nil, fmt.Errorf("read the TPM's answer: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("the TPM answered with a size of %d bytes: not a TPM response", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.c, rsp[10:]); err != nil {
		return nil, fmt.Errorf("read the TPM's answer: %w", err)
	}
	return rsp, nil
}

func (s *streamTPM) Close() error { return s.c.Close() }
