package cloudsim

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Operation names, as AWS names the MQTT APIs. Faults are keyed by them.
const (
	OpCreateCertificateFromCsr = "CreateCertificateFromCsr"
	OpCreateKeysAndCertificate = "CreateKeysAndCertificate"
	OpRegisterThing            = "RegisterThing"
)

// FaultAction is what an injected fault does to one request.
type FaultAction string

const (
	// FaultDelay performs the operation, then holds the answer for Delay:
	// the cloud has acted, the device has not heard yet (the window in
	// which a power cut leaves a registered thing the device knows nothing
	// of).
	FaultDelay FaultAction = "delay"
	// FaultReject answers on /rejected with Status and Code without
	// performing the operation.
	FaultReject FaultAction = "reject"
	// FaultDrop swallows the request: nothing happens, no answer. With
	// AfterEffect the operation is performed and only the answer is lost.
	FaultDrop FaultAction = "drop"
	// FaultDisconnect closes the requester's connection instead of
	// answering. With AfterEffect the operation is performed first.
	FaultDisconnect FaultAction = "disconnect"
)

// Fault is one injected failure. Times limits how often it fires; 0 means
// every time.
type Fault struct {
	Op          string
	Action      FaultAction
	Delay       time.Duration
	Status      int
	Code        string
	AfterEffect bool
	Times       int
}

// String renders the fault in ParseFault's syntax.
func (f Fault) String() string {
	s := f.Op + ":" + string(f.Action)
	switch f.Action {
	case FaultDelay:
		s += "=" + f.Delay.String()
	case FaultReject:
		s += fmt.Sprintf("=%d/%s", f.Status, f.Code)
	case FaultDrop, FaultDisconnect:
		if f.AfterEffect {
			s += "=answer"
		}
	}
	if f.Times > 0 {
		s += ":times=" + strconv.Itoa(f.Times)
	}
	return s
}

// ParseFault reads the --fault syntax: OP:ACTION[:times=N], where ACTION is
// delay=DURATION, reject=STATUS/CODE, drop, drop=answer, disconnect or
// disconnect=answer. OP is CreateCertificateFromCsr,
// CreateKeysAndCertificate or RegisterThing (or * for all three).
func ParseFault(spec string) (Fault, error) {
	bad := func(why string) (Fault, error) {
		return Fault{}, fmt.Errorf("fault %q: %s (syntax: OP:delay=2s|reject=503/ServiceUnavailable|drop[=answer]|disconnect[=answer][:times=N])", spec, why)
	}
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return bad("want OP:ACTION[:times=N]")
	}
	var f Fault
	switch parts[0] {
	case OpCreateCertificateFromCsr, OpCreateKeysAndCertificate, OpRegisterThing, "*":
		f.Op = parts[0]
	default:
		return bad(fmt.Sprintf("unknown operation %q; use CreateCertificateFromCsr, CreateKeysAndCertificate, RegisterThing or *", parts[0]))
	}
	action, arg, hasArg := strings.Cut(parts[1], "=")
	f.Action = FaultAction(action)
	switch f.Action {
	case FaultDelay:
		d, err := time.ParseDuration(arg)
		if !hasArg || err != nil || d <= 0 {
			return bad("delay needs a positive duration, e.g. delay=2s")
		}
		f.Delay = d
	case FaultReject:
		status, code, ok := strings.Cut(arg, "/")
		n, err := strconv.Atoi(status)
		if !hasArg || !ok || err != nil || n < 400 || n > 599 || code == "" {
			return bad("reject needs STATUS/CODE with a 4xx or 5xx status, e.g. reject=503/ServiceUnavailable")
		}
		f.Status, f.Code = n, code
	case FaultDrop, FaultDisconnect:
		switch {
		case !hasArg:
		case arg == "answer":
			f.AfterEffect = true
		default:
			return bad(fmt.Sprintf("%s takes no value or =answer", action))
		}
	default:
		return bad(fmt.Sprintf("unknown action %q", action))
	}
	if len(parts) == 3 {
		v, ok := strings.CutPrefix(parts[2], "times=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 1 {
			return bad("times needs a positive count, e.g. times=2")
		}
		f.Times = n
	}
	return f, nil
}

// faultSet hands out faults as requests arrive, counting down Times.
type faultSet struct {
	mu     sync.Mutex
	faults []Fault
	fired  []int
}

func newFaultSet(faults []Fault) *faultSet {
	return &faultSet{faults: append([]Fault(nil), faults...), fired: make([]int, len(faults))}
}

// next returns the first fault for op that still has firings left.
func (s *faultSet) next(op string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.Op != op && f.Op != "*" {
			continue
		}
		if f.Times > 0 && s.fired[i] >= f.Times {
			continue
		}
		s.fired[i]++
		return f, true
	}
	return Fault{}, false
}
