// Package childenv keeps this process's secrets out of the commands it
// starts. A key URI may take its PIN or password from an environment
// variable (pkcs11:...?pin-source=env:NAME, tpm:...?auth-source=env:NAME);
// every command fleetprov runs (a state script, the restart command, a
// command parameter source) would otherwise inherit it, and a script that
// logs its environment would log the PIN.
package childenv

import (
	"os"
	"regexp"
	"strings"
	"sync"
)

var (
	mu     sync.Mutex
	hidden = map[string]bool{}
)

// sourceEnv finds the variables a key URI reads a secret from: any
// "...-source=env:NAME" attribute, whichever separator precedes it.
var sourceEnv = regexp.MustCompile(`(?:^|[?&;/])[a-z]+-source=env:([A-Za-z_][A-Za-z0-9_]*)`)

// HideSecretsOf hides the variables that the key URIs read secrets from.
func HideSecretsOf(uris ...string) {
	for _, u := range uris {
		for _, m := range sourceEnv.FindAllStringSubmatch(u, -1) {
			Hide(m[1])
		}
	}
}

// Hide keeps the named variables out of Environ.
func Hide(names ...string) {
	mu.Lock()
	defer mu.Unlock()
	for _, n := range names {
		hidden[n] = true
	}
}

// Environ is this process's environment without the hidden variables:
// what a command fleetprov starts gets. Plugins are not commands in this
// sense: a key store plugin is the process that uses the key, and gets
// the variable.
func Environ() []string {
	mu.Lock()
	defer mu.Unlock()
	env := os.Environ()
	if len(hidden) == 0 {
		return env
	}
	kept := env[:0:0]
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !hidden[name] {
			kept = append(kept, kv)
		}
	}
	return kept
}
