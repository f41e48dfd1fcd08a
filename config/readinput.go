package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Bounds on the files fleetprov reads whole as input. Greengrass's
// config.yaml is a few kilobytes; a certificate, a key or a CA bundle
// (the whole public bundle is about 200 KB) is well under a megabyte.
const (
	maxConfigFile = 16 << 20
	maxPEMFile    = 1 << 20
)

// readInput reads a file given as input (config.yaml, the claim
// certificate or key, the root CA) whole. It refuses a device, a FIFO or
// a socket, and a file over max bytes: /dev/zero or a pipe named by
// mistake would otherwise be read without end. A directory gives the
// read's own error ("is a directory"), as before.
func readInput(path string, max int64) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if m := fi.Mode(); !m.IsRegular() && !m.IsDir() {
		return nil, &notRegularError{kind: kindOf(fi)}
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		clear(b) // it may be key material
		return nil, &tooLargeError{max: max}
	}
	return b, nil
}

// notRegularError is an input that is not a regular file.
type notRegularError struct{ kind string }

func (e *notRegularError) Error() string { return "is " + e.kind + ", not a regular file" }

// tooLargeError is an input past its bound.
type tooLargeError struct{ max int64 }

func (e *tooLargeError) Error() string {
	size := fmt.Sprintf("%d MiB", e.max>>20)
	if e.max < 1<<20 {
		size = fmt.Sprintf("%d KiB", e.max>>10)
	}
	return "is larger than " + size + ", far more than such a file holds"
}

// inputProblem says what is wrong with an input readInput refused, or ""
// for another error.
func inputProblem(err error) string {
	var nr *notRegularError
	var tl *tooLargeError
	switch {
	case errors.As(err, &nr):
		return nr.Error()
	case errors.As(err, &tl):
		return tl.Error()
	}
	return ""
}
