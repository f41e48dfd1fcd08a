package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/internal/failure"
)

func newCloudCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cloud",
		Short: "Local AWS IoT fleet provisioning emulator (no AWS account needed)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newCloudInitCmd(app), newCloudServeCmd(app), newCloudThingsCmd(app))
	return cmd
}

// usageFrom turns the emulator's user-fixable errors into usage errors, so
// they exit 2 like any other bad input.
func usageFrom(err error) error {
	if errors.Is(err, cloudsim.ErrInitialised) || errors.Is(err, cloudsim.ErrNotInitialised) || errors.Is(err, cloudsim.ErrListen) {
		return &failure.UsageError{Msg: err.Error(), Err: err}
	}
	return err
}

func requireDir(dir string) error {
	if dir == "" {
		return failure.Usage("--dir is required: the emulator directory")
	}
	return nil
}

func newCloudInitCmd(app *App) *cobra.Command {
	var opts cloudsim.InitOptions
	cmd := &cobra.Command{
		Use:   "init --dir DIR [--listen HOST:PORT]",
		Short: "Create an emulator directory: CA, claim certificate, template, policies, device config.yaml",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireDir(opts.Dir); err != nil {
				return err
			}
			if err := cloudsim.Init(opts); err != nil {
				return usageFrom(err)
			}
			fmt.Fprintf(app.Stdout, "initialised %s; start it with: fleetprov cloud serve --dir %s\n", opts.Dir, opts.Dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.Dir, "dir", "", "emulator directory to create")
	cmd.Flags().StringVar(&opts.Listen, "listen", cloudsim.DefaultListen, "address the emulator will listen on (written into the device config)")
	return cmd
}

func newCloudServeCmd(app *App) *cobra.Command {
	var (
		dir, listen string
		faultSpecs  []string
		lifetime    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "serve --dir DIR [--fault OP:SPEC]... [--token-lifetime 1h]",
		Short: "Run the emulator until SIGINT or SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireDir(dir); err != nil {
				return err
			}
			if lifetime < 0 {
				return failure.Usage(fmt.Sprintf("--token-lifetime %s is negative", lifetime))
			}
			var faults []cloudsim.Fault
			for _, spec := range faultSpecs {
				f, err := cloudsim.ParseFault(spec)
				if err != nil {
					return failure.Usage("--fault: " + err.Error())
				}
				faults = append(faults, f)
			}
			srv, err := cloudsim.Open(cloudsim.Options{Dir: dir, Listen: listen, Logger: app.Logger, Faults: faults, TokenLifetime: lifetime})
			if err != nil {
				return usageFrom(err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := srv.Start(); err != nil {
				return err
			}
			// Tests and scripts wait for exactly this line.
			fmt.Fprintf(app.Stdout, "listening on %s\n", srv.Addr())
			<-ctx.Done()
			app.Logger.Info("shutting down")
			return srv.Close()
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "emulator directory made by `cloud init`")
	cmd.Flags().StringVar(&listen, "listen", "", "override the listen address recorded by init")
	cmd.Flags().StringArrayVar(&faultSpecs, "fault", nil, "inject a fault, repeatable: OP:delay=2s | OP:reject=503/ServiceUnavailable | OP:drop[=answer] | OP:disconnect[=answer], each optionally :times=N")
	cmd.Flags().DurationVar(&lifetime, "token-lifetime", 0, "how long an ownership token is honoured (default: as recorded, 1h)")
	return cmd
}

// The `things --json` shape; tests count certificates with it.
type (
	thingsJSON struct {
		Things       []thingJSON       `json:"things"`
		Certificates []certificateJSON `json:"certificates"`
	}
	thingJSON struct {
		ThingName    string            `json:"thingName"`
		Attributes   map[string]string `json:"attributes"`
		Groups       []string          `json:"groups"`
		Certificates []string          `json:"certificates"`
	}
	certificateJSON struct {
		CertificateID string    `json:"certificateId"`
		Status        string    `json:"status"`
		ThingName     string    `json:"thingName"`
		Policies      []string  `json:"policies"`
		Claim         bool      `json:"claim"`
		CreatedAt     time.Time `json:"createdAt"`
	}
)

func newCloudThingsCmd(app *App) *cobra.Command {
	var (
		dir    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "things --dir DIR [--json]",
		Short: "List the emulator's things and certificates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireDir(dir); err != nil {
				return err
			}
			return printThings(app.Stdout, dir, asJSON)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "emulator directory")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printThings lists the registry of the emulator in dir, as a table or as
// the JSON that tests count certificates with.
func printThings(w io.Writer, dir string, asJSON bool) error {
	reg, err := cloudsim.ReadRegistry(dir)
	if err != nil {
		return usageFrom(err)
	}
	out := thingsJSON{Things: []thingJSON{}, Certificates: []certificateJSON{}}
	for _, t := range reg.SortedThings() {
		tj := thingJSON{ThingName: t.Name, Attributes: t.Attributes, Groups: t.Groups, Certificates: t.Principals}
		if tj.Attributes == nil {
			tj.Attributes = map[string]string{}
		}
		if tj.Groups == nil {
			tj.Groups = []string{}
		}
		if tj.Certificates == nil {
			tj.Certificates = []string{}
		}
		out.Things = append(out.Things, tj)
	}
	for _, c := range reg.SortedCertificates() {
		pol := c.Policies
		if pol == nil {
			pol = []string{}
		}
		out.Certificates = append(out.Certificates, certificateJSON{
			CertificateID: c.ID, Status: c.Status, ThingName: c.ThingName, Policies: pol, Claim: c.Claim, CreatedAt: c.CreatedAt,
		})
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "THING\tGROUPS\tCERTIFICATES")
	for _, t := range out.Things {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", t.ThingName, dash(strings.Join(t.Groups, ",")), len(t.Certificates))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "CERTIFICATE\tSTATUS\tTHING")
	for _, c := range out.Certificates {
		thing := c.ThingName
		if c.Claim {
			thing = "(claim)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.CertificateID, c.Status, dash(thing))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
