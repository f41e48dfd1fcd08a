// Package loadtest provisions many simulated devices against an AWS IoT
// fleet provisioning endpoint (the local cloud, or a test account) and
// measures each step. Every simulated device is a full client: its own
// mutual-TLS MQTT connection with the claim certificate, its own key and
// CSR, the same requests fleetprov sends, and optionally a second
// connection with the certificate it was given.
package loadtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/internal/iotclient"
	"github.com/fleetprov/fleetprov/plugins/keystore"
)

// connectionRateExceeded is the CONNACK reason code of a throttled CONNECT.
const connectionRateExceeded = 0x9F

// Steps of one device, in order, as the summary names them.
const (
	StepConnect     = "connect"
	StepCertificate = "certificate"
	StepRegister    = "register"
	StepVerify      = "verify"
	StepTotal       = "total"
)

// Options say what to provision and how hard.
type Options struct {
	// Config supplies the endpoint, port, claim certificate and key, root
	// CA, template, template parameters, payload format, certificate mode,
	// key algorithm and timeouts, as for `fleetprov run`.
	Config      *config.Config
	Devices     int // how many devices, in all
	Concurrency int // how many at once
	// Params are template parameters added to (or replacing) the config's,
	// each a pattern in which {n} stands for the device's number (0 to
	// Devices-1) and {n:06} for it zero-padded to 6 digits.
	Params map[string]string
	// Verify connects once more per device with its new certificate and
	// client id = thing name, as a provisioned device would.
	Verify bool
	// Progress, if set, is called after each device with the counts so far.
	Progress func(done, failed int)
}

// Result is the summary of a run; its JSON form is what --out writes.
type Result struct {
	Devices     int    `json:"devices"`
	Concurrency int    `json:"concurrency"`
	Format      string `json:"format"`
	Mode        string `json:"mode"`
	Verify      bool   `json:"verify"`
	Succeeded   int    `json:"succeeded"`
	Failed      int    `json:"failed"`
	Throttled   int    `json:"throttled"` // devices that failed on a 429 or throttling rejection
	// ThrottledConnects counts CONNECTs refused for the connection rate
	// and retried after a backoff, whether the device then got through.
	ThrottledConnects int              `json:"throttledConnects"`
	Elapsed           Millis           `json:"elapsedMs"`
	PerSecond         float64          `json:"provisioningsPerSecond"`
	Steps             map[string]Stats `json:"steps"`
	Failures          []Failure        `json:"failures"`
}

// Stats are one step's latencies over the devices that got through it.
type Stats struct {
	Count int    `json:"count"`
	P50   Millis `json:"p50Ms"`
	P90   Millis `json:"p90Ms"`
	P99   Millis `json:"p99Ms"`
	Max   Millis `json:"maxMs"`
}

// Failure counts the devices that failed one way.
type Failure struct {
	Step    string `json:"step"`
	Code    string `json:"code"` // "429 ThrottlingException", or "error" when the cloud gave no code
	Message string `json:"message"`
	Count   int    `json:"count"`
}

// Millis is a duration written in JSON as milliseconds.
type Millis time.Duration

func (m Millis) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(time.Duration(m).Microseconds())/1000, 'f', 3, 64), nil
}

func (m Millis) String() string { return time.Duration(m).Round(100 * time.Microsecond).String() }

// deviceResult is what one device measured.
type deviceResult struct {
	steps   map[string]time.Duration
	failure *Failure
	// throttledConnects counts CONNECTs refused for the connection rate
	// (CONNACK 0x9F), each retried after a backoff.
	throttledConnects int
}

// ErrOptions marks an error in Options: the caller's to fix, nothing ran.
var ErrOptions = errors.New("loadtest")

// Run provisions o.Devices devices, o.Concurrency at a time, and returns
// the summary. It stops early only when ctx ends; a device that fails is
// counted, not retried.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Config == nil {
		return nil, fmt.Errorf("%w: no config", ErrOptions)
	}
	if o.Devices < 1 || o.Concurrency < 1 {
		return nil, fmt.Errorf("%w: devices (%d) and concurrency (%d) must be at least 1", ErrOptions, o.Devices, o.Concurrency)
	}
	for k, v := range o.Params {
		if _, err := expand(v, 0); err != nil {
			return nil, fmt.Errorf("%w: parameter %s: %w", ErrOptions, k, err)
		}
	}
	id, err := loadIdentity(o.Config)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	results := make([]deviceResult, o.Devices)
	var next, done, failed atomic.Int64
	var wg sync.WaitGroup
	for range min(o.Concurrency, o.Devices) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= o.Devices || ctx.Err() != nil {
					return
				}
				results[i] = provision(ctx, o, id, i)
				if results[i].failure != nil {
					failed.Add(1)
				}
				d := done.Add(1)
				if o.Progress != nil {
					o.Progress(int(d), int(failed.Load()))
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return summarise(o, results, elapsed), nil
}

// identity is what every simulated device starts with, read once: the
// claim certificate and key and the roots it trusts. A factory's devices
// share one claim; reading and parsing the files again for each device
// would cost the load generator CPU the cloud under test needs.
type identity struct {
	claim *tls.Certificate
	roots *x509.CertPool
}

func loadIdentity(cfg *config.Config) (identity, error) {
	// The errors name the files, never their contents.
	claim, err := tls.LoadX509KeyPair(cfg.ClaimCertPath, cfg.ClaimKeyPath)
	if err != nil {
		return identity{}, fmt.Errorf("%w: claim certificate %s and key %s: %w", ErrOptions, cfg.ClaimCertPath, cfg.ClaimKeyPath, err)
	}
	roots, err := iotclient.LoadRootCAs(cfg.RootCAPath)
	if err != nil {
		return identity{}, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	return identity{claim: &claim, roots: roots}, nil
}

// provision is one simulated device, start to end.
func provision(ctx context.Context, o Options, id identity, n int) deviceResult {
	var throttled atomic.Int32
	r := provisionSteps(ctx, o, id, n, &throttled)
	r.throttledConnects = int(throttled.Load())
	return r
}

func provisionSteps(ctx context.Context, o Options, id identity, n int, throttled *atomic.Int32) deviceResult {
	cfg := o.Config
	r := deviceResult{steps: map[string]time.Duration{}}
	fail := func(step string, err error) deviceResult {
		r.failure = classify(step, err)
		return r
	}
	begin := time.Now()
	t := begin
	lap := func(step string) {
		now := time.Now()
		r.steps[step] = now.Sub(t)
		t = now
	}

	onRefused := func(code byte) {
		if code == connectionRateExceeded {
			throttled.Add(1)
		}
	}
	c, err := iotclient.Dial(ctx, iotclient.Options{
		Endpoint: cfg.IoTDataHost, Port: cfg.MQTTPort,
		ClaimCertPath: cfg.ClaimCertPath, ClaimKeyPath: cfg.ClaimKeyPath, Claim: id.claim,
		RootCAPath: cfg.RootCAPath, RootCAs: id.roots, ConnectTimeout: cfg.ConnectTimeout,
		Format: cfg.PayloadFormat, ALPN: cfg.MQTTALPN, OnConnectRefused: onRefused,
	})
	if err != nil {
		return fail(StepConnect, err)
	}
	defer c.Close()
	lap(StepConnect)

	var (
		certPEM, token string
		key            any
	)
	rctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	if cfg.CertificateMode == config.ModeCreateKeys {
		res, err := c.CreateKeysAndCertificate(rctx)
		if err != nil {
			return fail(StepCertificate, err)
		}
		k, err := keystore.ParsePrivateKeyPEM([]byte(res.PrivateKeyPEM), "privateKey from the cloud")
		if err != nil {
			return fail(StepCertificate, err)
		}
		certPEM, token, key = res.CertificatePEM, res.OwnershipToken, k
	} else {
		k, err := keystore.NewKey(keystore.Algorithm(cfg.KeyAlgorithm))
		if err != nil {
			return fail(StepCertificate, err)
		}
		csr, err := keystore.CreateCSR(k, cfg.CSRCommonName)
		if err != nil {
			return fail(StepCertificate, err)
		}
		res, err := c.CreateCertificateFromCsr(rctx, string(csr))
		if err != nil {
			return fail(StepCertificate, err)
		}
		certPEM, token, key = res.CertificatePEM, res.OwnershipToken, k
	}
	lap(StepCertificate)

	params := maps.Clone(cfg.TemplateParams)
	if params == nil {
		params = map[string]string{}
	}
	for k, pattern := range o.Params {
		params[k], _ = expand(pattern, n) // checked by Run
	}
	rctx2, cancel2 := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel2()
	reg, err := c.RegisterThing(rctx2, cfg.TemplateName, token, params)
	if err != nil {
		return fail(StepRegister, err)
	}
	lap(StepRegister)
	_ = c.Close()

	if o.Verify {
		block, _ := pem.Decode([]byte(certPEM))
		if block == nil {
			return fail(StepVerify, errors.New("certificatePem is not PEM"))
		}
		dc, err := iotclient.Dial(ctx, iotclient.Options{
			Endpoint: cfg.IoTDataHost, Port: cfg.MQTTPort,
			ClientCert: &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key},
			ClientID:   reg.ThingName,
			RootCAPath: cfg.RootCAPath, RootCAs: id.roots, ConnectTimeout: cfg.ConnectTimeout,
			Format: cfg.PayloadFormat, ALPN: cfg.MQTTALPN, OnConnectRefused: onRefused,
		})
		if err != nil {
			return fail(StepVerify, err)
		}
		_ = dc.Close()
		lap(StepVerify)
	}
	r.steps[StepTotal] = time.Since(begin)
	return r
}

// expand replaces {n} and {n:0W} in pattern with n.
func expand(pattern string, n int) (string, error) {
	var b strings.Builder
	rest := pattern
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			b.WriteString(rest)
			return b.String(), nil
		}
		b.WriteString(rest[:i])
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("%q: a { without its }", pattern)
		}
		field := rest[i+1 : i+j]
		switch {
		case field == "n":
			b.WriteString(strconv.Itoa(n))
		case strings.HasPrefix(field, "n:0"):
			w, err := strconv.Atoi(field[3:])
			if err != nil || w < 1 || w > 20 {
				return "", fmt.Errorf("%q: {%s} is not {n} or {n:0WIDTH}", pattern, field)
			}
			fmt.Fprintf(&b, "%0*d", w, n)
		default:
			return "", fmt.Errorf("%q: {%s} is not {n} or {n:0WIDTH}", pattern, field)
		}
		rest = rest[i+j+1:]
	}
}

// classify names a failure by the cloud's statusCode and errorCode, or by
// its message when the cloud gave none.
func classify(step string, err error) *Failure {
	var rej *iotclient.Rejection
	if errors.As(err, &rej) {
		return &Failure{Step: step, Code: fmt.Sprintf("%d %s", rej.StatusCode, rej.ErrorCode), Message: rej.ErrorMessage, Count: 1}
	}
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return &Failure{Step: step, Code: "error", Message: msg, Count: 1}
}

func isThrottled(f *Failure) bool {
	return strings.HasPrefix(f.Code, "429 ") || strings.Contains(f.Code, "Throttl")
}

func summarise(o Options, results []deviceResult, elapsed time.Duration) *Result {
	res := &Result{Devices: o.Devices, Concurrency: o.Concurrency, Format: o.Config.PayloadFormat,
		Mode: o.Config.CertificateMode, Verify: o.Verify, Elapsed: Millis(elapsed), Steps: map[string]Stats{}, Failures: []Failure{}}
	byStep := map[string][]time.Duration{}
	failures := map[[3]string]int{}
	for _, r := range results {
		res.ThrottledConnects += r.throttledConnects
		for step, d := range r.steps {
			byStep[step] = append(byStep[step], d)
		}
		if f := r.failure; f != nil {
			res.Failed++
			if isThrottled(f) {
				res.Throttled++
			}
			failures[[3]string{f.Step, f.Code, f.Message}]++
		} else {
			res.Succeeded++
		}
	}
	for step, ds := range byStep {
		slices.Sort(ds)
		res.Steps[step] = Stats{Count: len(ds), P50: Millis(quantile(ds, 0.50)), P90: Millis(quantile(ds, 0.90)),
			P99: Millis(quantile(ds, 0.99)), Max: Millis(ds[len(ds)-1])}
	}
	for k, n := range failures {
		res.Failures = append(res.Failures, Failure{Step: k[0], Code: k[1], Message: k[2], Count: n})
	}
	slices.SortFunc(res.Failures, func(a, b Failure) int { return b.Count - a.Count })
	if elapsed > 0 {
		res.PerSecond = float64(res.Succeeded) / elapsed.Seconds()
	}
	return res
}

// quantile is the nearest-rank quantile of sorted ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	i := int(float64(len(ds))*q+0.999999) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// StepOrder lists the steps in the order a device takes them.
var StepOrder = []string{StepConnect, StepCertificate, StepRegister, StepVerify, StepTotal}
