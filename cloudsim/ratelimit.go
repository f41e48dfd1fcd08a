package cloudsim

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RateLimit caps how many provisioning requests one connection may make:
// Requests per Per, with bursts up to Requests. The zero value is no limit,
// the default, as tests and demos want every request served.
type RateLimit struct {
	Requests int
	Per      time.Duration
}

// String renders the limit in ParseRateLimit's syntax.
func (l RateLimit) String() string {
	if !l.enabled() {
		return "off"
	}
	return fmt.Sprintf("%d/%s", l.Requests, l.Per)
}

func (l RateLimit) enabled() bool { return l.Requests > 0 && l.Per > 0 }

// ParseRateLimit reads N/DURATION, e.g. 5/1s or 100/1m.
func ParseRateLimit(spec string) (RateLimit, error) {
	n, per, ok := strings.Cut(spec, "/")
	count, err := strconv.Atoi(n)
	if !ok || err != nil || count < 1 {
		return RateLimit{}, fmt.Errorf("rate limit %q: want N/DURATION with N >= 1, e.g. 5/1s", spec)
	}
	d, err := time.ParseDuration(per)
	if err != nil || d <= 0 {
		return RateLimit{}, fmt.Errorf("rate limit %q: want N/DURATION with a positive duration, e.g. 5/1s", spec)
	}
	return RateLimit{Requests: count, Per: d}, nil
}

// limiter is one token bucket per connection.
type limiter struct {
	limit   RateLimit
	mu      sync.Mutex
	buckets map[any]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(l RateLimit) *limiter {
	return &limiter{limit: l, buckets: map[any]*bucket{}}
}

// allow takes one token from conn's bucket, refilled at Requests per Per.
func (l *limiter) allow(conn any, now time.Time) bool {
	if l == nil || !l.limit.enabled() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	capacity := float64(l.limit.Requests)
	b, ok := l.buckets[conn]
	if !ok {
		b = &bucket{tokens: capacity, at: now}
		l.buckets[conn] = b
	}
	if el := now.Sub(b.at); el > 0 {
		b.tokens = min(capacity, b.tokens+capacity*float64(el)/float64(l.limit.Per))
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// forget drops a closed connection's bucket.
func (l *limiter) forget(conn any) {
	if l == nil {
		return
	}
	l.mu.Lock()
	delete(l.buckets, conn)
	l.mu.Unlock()
}

// AccountLimits are AWS IoT Core's account-wide quotas, each enforced only
// when set (the zero value enforces none, the default), so a user can see
// how a fleet backs off before meeting the real ones.
type AccountLimits struct {
	// Connect caps CONNECT requests across the account (AWS: 500 per
	// second by default, adjustable).
	Connect RateLimit
	// ConnectPerClient caps CONNECT requests per client id (AWS: 1 per
	// second).
	ConnectPerClient RateLimit
	// Operation caps each provisioning operation's requests across the
	// account (CreateCertificateFromCsr, CreateKeysAndCertificate and
	// RegisterThing counted apart).
	Operation RateLimit
}

// accountLimiter holds the buckets of AccountLimits.
type accountLimiter struct {
	connect, perClient, operation *limiter
}

func newAccountLimiter(l AccountLimits) *accountLimiter {
	return &accountLimiter{connect: newLimiter(l.Connect), perClient: newLimiter(l.ConnectPerClient), operation: newLimiter(l.Operation)}
}

// allowConnect takes a token for a CONNECT from the account's bucket and
// the client id's.
func (a *accountLimiter) allowConnect(clientID string, now time.Time) bool {
	if a == nil {
		return true
	}
	return a.connect.allow("account", now) && a.perClient.allow("client:"+clientID, now)
}

// allowOperation takes a token from op's account-wide bucket.
func (a *accountLimiter) allowOperation(op string, now time.Time) bool {
	if a == nil {
		return true
	}
	return a.operation.allow("op:"+op, now)
}
