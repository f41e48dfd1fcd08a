package main

import (
	"os/exec"
	"strings"
	"testing"
)

// fleetprov runs plugins in the plugin host process (plugins/remote) so
// that it does not link go-plugin, gRPC and protobuf: their package
// initialisation is most of a run's memory, plugins or not. An import
// that brings one of them back fails here.
func TestBinaryLinksNoPluginMachinery(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not on PATH")
	}
	for _, tags := range []string{"", "tpm"} {
		out, err := exec.Command(gobin, "list", "-deps", "-tags", tags, ".").CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps -tags %q: %v\n%s", tags, err, out)
		}
		for _, pkg := range strings.Fields(string(out)) {
			for _, banned := range []string{"github.com/hashicorp/go-plugin", "google.golang.org/grpc", "google.golang.org/protobuf", "net/rpc", "encoding/gob"} {
				if pkg == banned || strings.HasPrefix(pkg, banned+"/") {
					t.Errorf("fleetprov (tags %q) links %s: run plugins through plugins/remote, not plugins/host or plugins/sdk", tags, pkg)
				}
			}
		}
	}
}
