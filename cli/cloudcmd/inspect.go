package cloudcmd

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetprov/fleetprov/cli"
	"github.com/fleetprov/fleetprov/cloudsim"
)

// The `cloud things --json` and `cloud certs --json` shapes. Field names
// are kept once published: scripts and tests read thingName and
// certificates. New fields are added, never renamed.
type (
	thingsJSON struct {
		Things       []thingJSON       `json:"things"`
		Certificates []certificateJSON `json:"certificates"`
	}
	thingJSON struct {
		ThingName     string            `json:"thingName"`
		ThingTypeName string            `json:"thingTypeName"`
		BillingGroup  string            `json:"billingGroup"`
		Attributes    map[string]string `json:"attributes"`
		Groups        []string          `json:"groups"`
		Certificates  []string          `json:"certificates"`
		CreatedAt     time.Time         `json:"createdAt"`
	}
	certsJSON struct {
		Certificates []certificateJSON `json:"certificates"`
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

func newCloudThingsCmd(app *cli.App) *cobra.Command {
	var (
		dir    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "things --dir DIR [--json]",
		Short: "List the emulator's things: type, billing group, groups, attributes, certificates",
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

func newCloudCertsCmd(app *cli.App) *cobra.Command {
	var (
		dir          string
		asJSON, wide bool
	)
	cmd := &cobra.Command{
		Use:   "certs --dir DIR [--wide | --json]",
		Short: "List the emulator's certificates: status, thing, attached policies, which is the claim",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireDir(dir); err != nil {
				return err
			}
			reg, err := cloudsim.ReadRegistry(dir)
			if err != nil {
				return usageFrom(err)
			}
			return printCerts(app.Stdout, reg, asJSON, wide)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "emulator directory")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&wide, "wide", false, "whole ids, policy names and creation times (wider than 80 columns)")
	return cmd
}

func newCloudUpdateCertificateCmd(app *cli.App) *cobra.Command {
	var dir, id, status string
	cmd := &cobra.Command{
		Use:   "update-certificate --dir DIR --certificate-id ID --new-status ACTIVE|INACTIVE|REVOKED",
		Short: "Set a certificate's status, as `aws iot update-certificate` does (the emulator must be stopped)",
		Long: `Set a certificate's status, as ` + "`aws iot update-certificate`" + ` does on AWS: ACTIVE,
INACTIVE or REVOKED; a revoked certificate stays revoked. A certificate
that is not ACTIVE can no longer connect. The emulator keeps its registry
in the serving process, so stop ` + "`fleetprov cloud serve`" + ` first and start it again after.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireDir(dir); err != nil {
				return err
			}
			old, err := cloudsim.UpdateCertificate(dir, id, status)
			if err != nil {
				return usageFrom(err)
			}
			fmt.Fprintf(app.Stdout, "certificate %s: %s -> %s\n", id, old, status)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "emulator directory")
	cmd.Flags().StringVar(&id, "certificate-id", "", "the certificate's id: 64 hex characters, as cloud certs --json shows")
	cmd.Flags().StringVar(&status, "new-status", "", "ACTIVE, INACTIVE or REVOKED")
	return cmd
}

func thingsOf(reg *cloudsim.Registry) []thingJSON {
	out := []thingJSON{}
	for _, t := range reg.SortedThings() {
		// Empty lists and maps print as [] and {}, not null, so a script
		// can index them without a check.
		tj := thingJSON{ThingName: t.Name, ThingTypeName: t.ThingTypeName, BillingGroup: t.BillingGroup,
			Attributes: t.Attributes, Groups: t.Groups, Certificates: t.Principals, CreatedAt: t.CreatedAt}
		if tj.Attributes == nil {
			tj.Attributes = map[string]string{}
		}
		if tj.Groups == nil {
			tj.Groups = []string{}
		}
		if tj.Certificates == nil {
			tj.Certificates = []string{}
		}
		out = append(out, tj)
	}
	return out
}

func certsOf(reg *cloudsim.Registry) []certificateJSON {
	out := []certificateJSON{}
	for _, c := range reg.SortedCertificates() {
		pol := c.Policies
		if pol == nil {
			pol = []string{}
		}
		out = append(out, certificateJSON{
			CertificateID: c.ID, Status: c.Status, ThingName: c.ThingName, Policies: pol, Claim: c.Claim, CreatedAt: c.CreatedAt,
		})
	}
	return out
}

// printThings lists the things of the emulator in dir, as a table or as
// JSON; the JSON keeps the certificates list it always had, which tests
// count.
func printThings(w io.Writer, dir string, asJSON bool) error {
	reg, err := cloudsim.ReadRegistry(dir)
	if err != nil {
		return usageFrom(err)
	}
	things := thingsOf(reg)
	if asJSON {
		return writeJSON(w, thingsJSON{Things: things, Certificates: certsOf(reg)})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "THING\tTYPE\tBILLING GROUP\tGROUPS\tATTRIBUTES\tCERTIFICATES")
	for _, t := range things {
		attrs := make([]string, 0, len(t.Attributes))
		for _, k := range slices.Sorted(maps.Keys(t.Attributes)) {
			attrs = append(attrs, k+"="+t.Attributes[k])
		}
		certs := make([]string, 0, len(t.Certificates))
		for _, id := range t.Certificates {
			certs = append(certs, shortID(id))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ThingName, dash(t.ThingTypeName), dash(t.BillingGroup),
			dash(strings.Join(t.Groups, ",")), dash(strings.Join(attrs, ",")), dash(strings.Join(certs, ",")))
	}
	if len(things) == 0 {
		fmt.Fprintln(tw, "(no things)")
	}
	return tw.Flush()
}

// printCerts lists the certificates, claim first, with full ids: they are
// what a user pastes into grep or the registry.
// printCerts lists the certificates: to fit 80 columns, ids abbreviated
// and policies counted; wide shows ids whole, the policies by name and
// when each was created.
func printCerts(w io.Writer, reg *cloudsim.Registry, asJSON, wide bool) error {
	certs := certsOf(reg)
	if asJSON {
		return writeJSON(w, certsJSON{Certificates: certs})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if wide {
		fmt.Fprintln(tw, "CERTIFICATE\tSTATUS\tTHING\tPOLICIES\tCREATED")
	} else {
		fmt.Fprintln(tw, "CERTIFICATE\tSTATUS\tTHING\tPOLICIES")
	}
	for _, c := range certs {
		thing := c.ThingName
		if c.Claim {
			thing = "(claim)"
		}
		if wide {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.CertificateID, c.Status, dash(thing),
				dash(strings.Join(c.Policies, ",")), c.CreatedAt.UTC().Format(time.RFC3339))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", shortID(c.CertificateID), c.Status, dash(thing), len(c.Policies))
	}
	return tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// shortID abbreviates a 64-hex certificate id for the tables, as the
// AWS console does; `cloud certs --wide` shows it whole.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12] + "…"
	}
	return id
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
