package host_test

import (
	"fmt"
	"log/slog"
	"os"
	"testing"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/internal/plugintest"
	"github.com/fleetprov/fleetprov/plugins/host"
	"github.com/fleetprov/fleetprov/plugins/internal/hosttest"
)

var goodBin, badBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleetprov-plugins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goodBin, err = plugintest.Build(dir, "good")
	if err == nil {
		badBin, err = plugintest.Build(dir, "bad")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// suite runs the plugins in this process. Its tests do not run in
// parallel: plugin: key URIs resolve against the one open Host.
func suite() hosttest.Options {
	return hosttest.Options{
		New: func(tb testing.TB, log *slog.Logger, plugins ...config.Plugin) hosttest.Host {
			h := host.New(host.Options{Plugins: plugins, Logger: log})
			tb.Cleanup(func() { h.Close() })
			return h
		},
		Good: goodBin,
		Bad:  badBin,
	}
}

func TestHost(t *testing.T) { hosttest.Run(t, suite()) }
