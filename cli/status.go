package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
	"github.com/fleetprov/fleetprov/states"
)

// statusReport is the --json form of status. Its field names are an
// interface: scripts read them.
type statusReport struct {
	Config        string `json:"config"`
	Journal       string `json:"journal"`
	State         string `json:"state"`
	FailedState   string `json:"failedState,omitempty"`
	Error         string `json:"error,omitempty"`
	ThingName     string `json:"thingName,omitempty"`
	CertificateID string `json:"certificateId,omitempty"`
	// PriorCertificateID is a certificate given up on after its
	// registration went unanswered: the next run checks that the cloud
	// did not activate it before asking for another.
	PriorCertificateID string             `json:"priorCertificateId,omitempty"`
	KeyURI             string             `json:"keyUri,omitempty"`
	TokenAge           string             `json:"tokenAge,omitempty"`
	Transitions        []statusTransition `json:"transitions"`
	Skipped            int                `json:"skippedRecords,omitempty"`
	DeviceConfig       map[string]string  `json:"deviceConfiguration,omitempty"`
	// TemplateParams are the parameters journaled for RegisterThing;
	// ParamSources names the source of each derived one.
	TemplateParams map[string]string `json:"templateParams,omitempty"`
	ParamSources   map[string]string `json:"paramSources,omitempty"`
	Provisioned    bool              `json:"provisioned"`
	// Warning says why a device that looks provisioned cannot connect:
	// its certificate or key is missing, or they do not belong together.
	Warning string   `json:"warning,omitempty"`
	Files   []string `json:"files,omitempty"`

	// VerifiedAt is when the new certificate was seen to connect;
	// ClaimRetired the claim files deleted after that.
	VerifiedAt   time.Time `json:"verifiedAt,omitzero"`
	ClaimRetired []string  `json:"claimRetired,omitempty"`
}

type statusTransition struct {
	Seq     int       `json:"seq"`
	State   string    `json:"state"`
	Time    time.Time `json:"time"`
	Attempt int       `json:"attempt"`
	Error   string    `json:"error,omitempty"`
}

func newStatusCmd(app *App) *cobra.Command {
	var asJSON, provisionedOnly bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the journal: current state, each transition, thing, certificate, token age",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON && provisionedOnly {
				return failure.Usage("--json and --provisioned do not go together: --json has the answer in its \"provisioned\" field")
			}
			cfg, err := config.Load(app.loadOptions(cmd.Flags(), true))
			if err != nil {
				return err
			}
			recs, skipped, err := engine.ReadJournal(cfg.JournalPath)
			if err != nil {
				return err
			}
			rep := statusReport{Config: cfg.File, Journal: cfg.JournalPath, State: "none", Skipped: skipped, Transitions: []statusTransition{}}
			for _, r := range recs {
				rep.Transitions = append(rep.Transitions, statusTransition{Seq: r.Seq, State: r.State, Time: r.Time, Attempt: r.Attempt, Error: r.Error})
			}
			if n := len(recs); n > 0 {
				last := recs[n-1]
				rep.State, rep.FailedState, rep.Error = last.State, last.FailedState, last.Error
				rep.ThingName, rep.CertificateID = last.Data.ThingName, last.Data.CertificateID
				rep.KeyURI, rep.PriorCertificateID = last.Data.KeyURI, last.Data.PriorCertificateID
				rep.DeviceConfig, rep.Files = last.Data.DeviceConfiguration, last.Data.Files
				rep.TemplateParams, rep.ParamSources = last.Data.TemplateParams, last.Data.ParamSources
				rep.VerifiedAt, rep.ClaimRetired = last.Data.VerifiedAt, last.Data.ClaimRetired
				if age := last.Data.TokenAge(time.Now()); age > 0 {
					rep.TokenAge = age.Round(time.Second).String()
				}
			}
			rep.Provisioned = rep.State == engine.Done || (len(recs) == 0 && config.IsProvisioned(cfg))
			if rep.Provisioned {
				if err := states.CheckProvisioned(cmd.Context(), cfg); err != nil {
					rep.Warning = err.Error() + ": run `fleetprov reset`, then `fleetprov run`"
				}
			}
			if provisionedOnly {
				return provisionedExit(app, rep)
			}
			if asJSON {
				enc := json.NewEncoder(app.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printStatus(app, rep)
			return nil
		},
	}
	configFlag(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&provisionedOnly, "provisioned", false, "print one line; exit 0 if the device is provisioned, 1 if not (for scripts and the unit's ExecCondition=)")
	return cmd
}

// provisionedExit answers status --provisioned: one line, and the exit
// code a script or the systemd unit tests. A device that looks
// provisioned but whose certificate or key cannot be used is not: a run
// is what tells the user what to do about it.
func provisionedExit(app *App, rep statusReport) error {
	switch {
	case rep.Provisioned && rep.Warning == "":
		if rep.ThingName != "" {
			fmt.Fprintf(app.Stdout, "provisioned: thing %s\n", shown(rep.ThingName))
		} else {
			fmt.Fprintln(app.Stdout, "provisioned: config.yaml names a device certificate")
		}
		return nil
	case rep.Provisioned:
		return fmt.Errorf("not provisioned: looks provisioned, but %s", rep.Warning)
	case rep.FailedState != "":
		return fmt.Errorf("not provisioned: the last run failed in %s; run `fleetprov run` to resume", shown(rep.FailedState))
	case len(rep.Transitions) == 0:
		return fmt.Errorf("not provisioned: no journal at %s", rep.Journal)
	default:
		return fmt.Errorf("not provisioned: the journal stops at %s; run `fleetprov run` to resume", shown(rep.State))
	}
}

func printStatus(app *App, rep statusReport) {
	w := app.Stdout
	fmt.Fprintf(w, "config:      %s\njournal:     %s\n", rep.Config, rep.Journal)
	state := shown(rep.State)
	if rep.FailedState != "" {
		state += " in " + shown(rep.FailedState)
	}
	fmt.Fprintf(w, "state:       %s\n", state)
	if rep.Error != "" {
		// Said once, here: the last transition is this failure.
		fmt.Fprintf(w, "error:       %s\n", shown(rep.Error))
	}
	if rep.ThingName != "" {
		fmt.Fprintf(w, "thing:       %s\n", shown(rep.ThingName))
	}
	if rep.CertificateID != "" {
		fmt.Fprintf(w, "certificate: %s\n", shown(rep.CertificateID))
	}
	if rep.KeyURI != "" {
		fmt.Fprintf(w, "key:         %s\n", shown(rep.KeyURI))
	}
	if rep.PriorCertificateID != "" {
		fmt.Fprintf(w, "prior certificate: %s (its registration went unanswered; checked not ACTIVE before another is asked for)\n", shown(rep.PriorCertificateID))
	}
	if rep.TokenAge != "" {
		fmt.Fprintf(w, "token age:   %s\n", rep.TokenAge)
	}
	if !rep.VerifiedAt.IsZero() {
		fmt.Fprintf(w, "verified:    %s (connected with client id = thing name)\n", rep.VerifiedAt.Local().Format(time.RFC3339))
	}
	if len(rep.ClaimRetired) > 0 {
		fmt.Fprintf(w, "claim retired: %s\n", shown(strings.Join(rep.ClaimRetired, ", ")))
	}
	printParams(w, "parameter:   ", rep.TemplateParams, rep.ParamSources)
	for _, k := range slices.Sorted(maps.Keys(rep.DeviceConfig)) {
		fmt.Fprintf(w, "device configuration: %s=%s\n", shown(k), shown(rep.DeviceConfig[k]))
	}
	if rep.Skipped > 0 {
		fmt.Fprintf(w, "ignored %d torn or corrupt journal record(s)\n", rep.Skipped)
	}
	if rep.Warning != "" {
		fmt.Fprintf(w, "warning: looks provisioned, but %s\n", shown(rep.Warning))
	}
	if len(rep.Transitions) == 0 {
		if rep.Provisioned {
			fmt.Fprintln(w, "no journal; config already names a device certificate")
		} else {
			fmt.Fprintln(w, "no journal: not provisioned yet")
		}
		return
	}
	fmt.Fprintln(w, "transitions:")
	for i, t := range rep.Transitions {
		fmt.Fprintf(w, "  %3d  %s  %-18s entry %d", t.Seq, t.Time.Local().Format(time.RFC3339), shown(t.State), t.Attempt)
		if t.Error != "" && (i < len(rep.Transitions)-1 || t.Error != rep.Error) {
			fmt.Fprintf(w, "  error: %s", shown(t.Error))
		}
		fmt.Fprintln(w)
	}
}

// printParams writes one line per template parameter, sorted, with the
// source of each derived one.
func printParams(w io.Writer, prefix string, params, sources map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(params)) {
		fmt.Fprintf(w, "%s%s=%s", prefix, shown(k), shown(params[k]))
		if src, ok := sources[k]; ok {
			fmt.Fprintf(w, " (%s)", shown(src))
		}
		fmt.Fprintln(w)
	}
}

// maxShown bounds a value printed from the journal: what the cloud or a
// plugin put there must not flood the terminal.
const maxShown = 1024

// shown makes a value from the journal safe to print on one line: plain
// text (letters, digits, punctuation, spaces) as it is, anything holding a
// control character, an escape code or invalid UTF-8 quoted Go-style, so
// that it cannot forge lines or drive the terminal; long values are cut.
func shown(s string) string {
	cut := ""
	if len(s) > maxShown {
		cut = fmt.Sprintf("... (%d bytes)", len(s))
		s = s[:maxShown]
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) {
		return strconv.Quote(s) + cut
	}
	return s + cut
}
