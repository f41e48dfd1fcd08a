package engine

import (
	"math"
	"testing"
	"time"
)

// A whole record whose attempt count is absurd (written by hand, or by
// another build) cannot slip past the cap by wrapping round; a negative
// one counts as none.
func TestResumeAttemptCountCannotWrap(t *testing.T) {
	m := builtinMachine(t)
	_, err := m.Resume(ResumeInput{Last: &Record{Seq: 1, State: CreateCertificate, Attempt: math.MaxInt}, Now: time.Now(), TokenLifetime: time.Hour, MaxAttempts: 10})
	want := "state CreateCertificate was entered 2147483647 times without progress; see `fleetprov status`, fix the cause, then run `fleetprov reset`"
	if err == nil || err.Error() != want {
		t.Errorf("attempt MaxInt: %v\nwant %s", err, want)
	}
	p, err := m.Resume(ResumeInput{Last: &Record{Seq: 1, State: CreateCertificate, Attempt: -5}, Now: time.Now(), TokenLifetime: time.Hour, MaxAttempts: 10})
	if err != nil || p.Start != CreateCertificate || p.Attempt != 1 {
		t.Errorf("attempt -5: plan %+v, %v; want CreateCertificate, attempt 1", p, err)
	}
}
