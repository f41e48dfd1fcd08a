// Package cloudcmd holds the local cloud's commands (fleetprov cloud ...,
// fleetprov demo), kept apart from package cli so that a device-only build
// leaves the emulator out of its binary.
package cloudcmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetprov/fleetprov/cli"
	"github.com/fleetprov/fleetprov/cloudsim"
	"github.com/fleetprov/fleetprov/failure"
)

// Commands are the local cloud's commands, for cli.Build.Commands: cloud
// (init, serve, things, certs, update-certificate) and demo. A device-only build leaves them
// out, and the emulator with them.
var Commands = []func(*cli.App) *cobra.Command{newCloudCmd, newDemoCmd, newLoadtestCmd}

func newCloudCmd(app *cli.App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cloud",
		Short: "Local AWS IoT fleet provisioning emulator (no AWS account needed)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newCloudInitCmd(app), newCloudServeCmd(app), newCloudThingsCmd(app), newCloudCertsCmd(app), newCloudUpdateCertificateCmd(app))
	return cmd
}

// usageFrom turns the emulator's user-fixable errors into usage errors, so
// they exit 2 like any other bad input.
func usageFrom(err error) error {
	if errors.Is(err, cloudsim.ErrInitialised) || errors.Is(err, cloudsim.ErrNotInitialised) || errors.Is(err, cloudsim.ErrListen) || errors.Is(err, cloudsim.ErrPolicy) || errors.Is(err, cloudsim.ErrBrokerMode) || errors.Is(err, cloudsim.ErrCertificate) {
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

func newCloudInitCmd(app *cli.App) *cobra.Command {
	var opts cloudsim.InitOptions
	cmd := &cobra.Command{
		Use:   "init --dir DIR [--listen HOST:PORT] [--claim-policy NAME]...",
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
	cmd.Flags().StringArrayVar(&opts.ClaimPolicies, "claim-policy", nil, "policy the claim certificate gets, repeatable: GreengrassProvisioningClaimPolicy (default; CSR flow) or CreateKeysClaimPolicy (CreateKeysAndCertificate)")
	return cmd
}

func newCloudServeCmd(app *cli.App) *cobra.Command {
	var (
		dir, listen string
		faultSpecs  []string
		lifetime    time.Duration
		wire        cloudsim.Options // the wire and transport switches
		rateLimit   string
		accountLim  [3]string // --connect-rate, --client-connect-rate, --operation-rate
	)
	cmd := &cobra.Command{
		Use:   "serve --dir DIR [--fault OP:SPEC]... [--token-lifetime 1h] [--strict-delivery] [--single-use-tokens] [--rate-limit N/DUR] [--connect-rate N/DUR] [--client-connect-rate N/DUR] [--operation-rate N/DUR] [--broker URL]",
		Short: "Run the emulator until SIGINT or SIGTERM",
		Long: `Run the emulator on the directory cloud init made, until SIGINT or SIGTERM.
It prints "listening on ADDR" (with --broker, "attached to URL") once devices
can connect. Every change to the registry is durable before its answer goes
out; a stop folds the registry's log into its snapshot. Go's garbage
collector runs at GOGC=400 here (less often than the default, for less CPU
per device and a larger heap) unless GOGC is set. See docs/cloud-emulator.md
for the switches and faults.`,
		Args: cobra.NoArgs,
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
			if rateLimit != "" {
				rl, err := cloudsim.ParseRateLimit(rateLimit)
				if err != nil {
					return failure.Usage("--rate-limit: " + err.Error())
				}
				wire.RateLimit = rl
			}
			for i, dst := range []*cloudsim.RateLimit{&wire.Account.Connect, &wire.Account.ConnectPerClient, &wire.Account.Operation} {
				if accountLim[i] == "" {
					continue
				}
				rl, err := cloudsim.ParseRateLimit(accountLim[i])
				if err != nil {
					return failure.Usage(fmt.Sprintf("--%s: %v", []string{"connect-rate", "client-connect-rate", "operation-rate"}[i], err))
				}
				*dst = rl
			}
			tuneGCForFleet()
			srv, err := cloudsim.Open(cloudsim.Options{Dir: dir, Listen: listen, Logger: app.Logger, Faults: faults, TokenLifetime: lifetime,
				StrictDelivery: wire.StrictDelivery, SingleUseTokens: wire.SingleUseTokens, RateLimit: wire.RateLimit, Account: wire.Account, Broker: wire.Broker})
			if err != nil {
				return usageFrom(err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := srv.Start(); err != nil {
				return err
			}
			// Tests and scripts wait for exactly this line.
			if wire.Broker != "" {
				fmt.Fprintf(app.Stdout, "attached to %s\n", srv.Addr())
			} else {
				fmt.Fprintf(app.Stdout, "listening on %s\n", srv.Addr())
			}
			<-ctx.Done()
			app.Logger.Info("shutting down")
			return srv.Close()
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "emulator directory made by cloud init")
	cmd.Flags().StringVar(&listen, "listen", "", "override the listen address recorded by init")
	cmd.Flags().StringArrayVar(&faultSpecs, "fault", nil, "inject a fault, repeatable: OP:delay=2s | OP:reject=503/ServiceUnavailable | OP:drop[=answer] | OP:disconnect[=answer], each optionally :times=N")
	cmd.Flags().DurationVar(&lifetime, "token-lifetime", 0, "how long an ownership token is honoured (default: as recorded, 1h)")
	cmd.Flags().BoolVar(&wire.StrictDelivery, "strict-delivery", false, "answer only a client subscribed to the response topic (default: the requesting connection, subscribed or not, as AWS IoT)")
	cmd.Flags().BoolVar(&wire.SingleUseTokens, "single-use-tokens", false, "refuse a second RegisterThing with the same ownership token (default: reusable for the same certificate while valid)")
	cmd.Flags().StringVar(&rateLimit, "rate-limit", "", "throttle each connection to N requests per DURATION, e.g. 5/1s (429 ThrottlingException; default: off)")
	cmd.Flags().StringVar(&accountLim[0], "connect-rate", "", "AWS's account quota: N CONNECTs per DURATION across the account, e.g. 500/1s (CONNACK 0x9F; default: off)")
	cmd.Flags().StringVar(&accountLim[1], "client-connect-rate", "", "AWS's quota per client id: N CONNECTs per DURATION, e.g. 1/1s (default: off)")
	cmd.Flags().StringVar(&accountLim[2], "operation-rate", "", "N requests per DURATION of each provisioning operation across the account (429 ThrottlingException; default: off)")
	cmd.Flags().StringVar(&wire.Broker, "broker", "", "attach to this MQTT 5 broker (mqtts://HOST:PORT or mqtt://HOST:PORT) instead of listening; one device at a time")
	return cmd
}
