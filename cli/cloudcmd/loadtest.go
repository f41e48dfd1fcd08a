package cloudcmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetprov/fleetprov/atomicfile"
	"github.com/fleetprov/fleetprov/cli"
	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/internal/loadtest"
)

func newLoadtestCmd(app *cli.App) *cobra.Command {
	var (
		dir, out, format, mode string
		devices, concurrency   int
		params                 []string
		verify                 bool
	)
	cmd := &cobra.Command{
		Use:   "loadtest [--dir DIR | --config FILE] [-n N] [-c C] [--param KEY=PATTERN]... [--verify] [--out FILE.json]",
		Short: "Provision N simulated devices, C at a time, and report throughput and latency per step",
		Long: `Provision N simulated devices, C at a time, against the endpoint a device
config names (--config, or --dir for a local cloud's config.yaml), and report
throughput, the p50/p90/p99/max of each step and the failures by the cloud's
error code. Each device is a full client: its own mutual-TLS connection with
the claim certificate, its own key and CSR, CreateCertificateFromCsr (or
CreateKeysAndCertificate) and RegisterThing; --verify then connects with the
new certificate and client id = thing name. Nothing is written on the device
side. Aimed at AWS, it creates real things and certificates in that account.

Parameter patterns: {n} is the device's number (0 to N-1), {n:06} the same
zero-padded to 6 digits, as in --param SerialNumber=lt-{n:06}.

Go's garbage collector runs at GOGC=400 here unless GOGC is set, so that the
load generator leaves the CPU to what it measures.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lo := app.LoadOptions(cmd.Flags())
			if dir != "" {
				if cmd.Flags().Changed(config.FlagConfig) {
					return failure.Usage("give --dir or --config, not both")
				}
				lo.Path = filepath.Join(dir, "config.yaml")
			}
			cfg, err := config.Load(lo)
			if err != nil {
				return err
			}
			if config.IsKeyURI(cfg.ClaimKeyPath) {
				return failure.Usage(fmt.Sprintf("claimKeyPath %s is a key store URI; loadtest needs the claim key in a file", cfg.ClaimKeyPath))
			}
			if format != "" {
				if format != config.FormatJSON && format != config.FormatCBOR {
					return failure.Usage(fmt.Sprintf("--format %q: want json or cbor", format))
				}
				cfg.PayloadFormat = format
			}
			if mode != "" {
				if mode != config.ModeCSR && mode != config.ModeCreateKeys {
					return failure.Usage(fmt.Sprintf("--mode %q: want csr or create-keys", mode))
				}
				cfg.CertificateMode = mode
			}
			if devices < 1 || concurrency < 1 {
				return failure.Usage(fmt.Sprintf("-n %d -c %d: both must be at least 1", devices, concurrency))
			}
			pm := map[string]string{}
			for _, p := range params {
				k, v, ok := strings.Cut(p, "=")
				if !ok || k == "" {
					return failure.Usage(fmt.Sprintf("--param %q: want KEY=PATTERN", p))
				}
				pm[k] = v
			}
			if out != "" {
				if _, err := os.Stat(filepath.Dir(out)); err != nil {
					return failure.Usage(fmt.Sprintf("--out %s: its directory does not exist", out))
				}
			}
			tuneGCForFleet()
			prog := newProgress(app.Stderr, devices)
			res, err := loadtest.Run(cmd.Context(), loadtest.Options{Config: cfg, Devices: devices, Concurrency: concurrency,
				Params: pm, Verify: verify, Progress: prog.update})
			prog.finish()
			if err != nil {
				if errors.Is(err, loadtest.ErrOptions) {
					return failure.Usage(err.Error())
				}
				return err
			}
			printSummary(app.Stdout, cfg.IoTDataHost, res)
			if out != "" {
				b, err := json.MarshalIndent(res, "", "  ")
				if err != nil {
					return err
				}
				if err := atomicfile.WriteFile(out, append(b, '\n'), 0o644); err != nil {
					return err
				}
			}
			if res.Failed > 0 {
				return fmt.Errorf("%d of %d devices failed", res.Failed, res.Devices)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "a local cloud's directory: use its config.yaml")
	f.String(config.FlagConfig, config.DefaultPath, "device config.yaml naming the endpoint, claim files, template and parameters")
	f.IntVarP(&devices, "devices", "n", 100, "how many devices to provision")
	f.IntVarP(&concurrency, "concurrency", "c", 10, "how many at once")
	f.StringVar(&format, "format", "", "payload format, json or cbor (default: the config's)")
	f.StringVar(&mode, "mode", "", "csr or create-keys (default: the config's certificateMode)")
	f.StringArrayVar(&params, "param", nil, "template parameter KEY=PATTERN; {n} is the device number")
	f.BoolVar(&verify, "verify", false, "connect again with each new certificate, client id = thing name")
	f.StringVar(&out, "out", "", "also write the summary as JSON to this file")
	return cmd
}

func printSummary(w io.Writer, endpoint string, r *loadtest.Result) {
	fmt.Fprintf(w, "%d devices against %s, %d at a time, %s, %s%s\n", r.Devices, endpoint, r.Concurrency, r.Format, r.Mode,
		map[bool]string{true: ", verified", false: ""}[r.Verify])
	fmt.Fprintf(w, "provisioned %d, failed %d (throttled %d) in %s: %.1f provisionings/s\n",
		r.Succeeded, r.Failed, r.Throttled, r.Elapsed, r.PerSecond)
	if r.ThrottledConnects > 0 {
		fmt.Fprintf(w, "CONNECTs throttled and retried: %d\n", r.ThrottledConnects)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "step\tcount\tp50\tp90\tp99\tmax\t")
	for _, step := range loadtest.StepOrder {
		s, ok := r.Steps[step]
		if !ok {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t\n", step, s.Count, s.P50, s.P90, s.P99, s.Max)
	}
	_ = tw.Flush()
	for _, f := range r.Failures {
		fmt.Fprintf(w, "failed %d× in %s: %s: %q\n", f.Count, f.Step, f.Code, f.Message)
	}
}

// progress draws a bar on a terminal, and a line per tenth elsewhere.
type progress struct {
	w        io.Writer
	total    int
	terminal bool
	start    time.Time

	mu        sync.Mutex
	lastTenth int
	lastDraw  time.Time
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total, start: time.Now()}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

func (p *progress) update(done, failed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rate := float64(done) / max(time.Since(p.start).Seconds(), 1e-3)
	if p.terminal {
		if time.Since(p.lastDraw) < 100*time.Millisecond && done < p.total {
			return
		}
		p.lastDraw = time.Now()
		const width = 30
		filled := width * done / p.total
		fmt.Fprintf(p.w, "\r[%s%s] %d/%d  %.0f/s  failed %d ", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), done, p.total, rate, failed)
		return
	}
	if tenth := 10 * done / p.total; tenth > p.lastTenth {
		p.lastTenth = tenth
		fmt.Fprintf(p.w, "%d/%d devices (%d%%), %.0f/s, failed %d\n", done, p.total, tenth*10, rate, failed)
	}
}

func (p *progress) finish() {
	if p.terminal {
		fmt.Fprintln(p.w)
	}
}
