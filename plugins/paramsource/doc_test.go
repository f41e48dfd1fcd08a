package paramsource

import (
	"os"
	"strings"
	"testing"
)

// docs/configuration.md has a row for every built-in source naming each of
// its options, and the formats and fields the sources accept, so the docs
// cannot fall behind the code.
func TestDocsListEverySource(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "| `"); ok {
			name, _, _ = strings.Cut(name, "`")
			rows[name] = line
		}
	}
	for _, name := range []string{SourceCommand, SourceDMI, SourceEnv, SourceFile, SourceMAC, SourceMachineID, PluginPrefix + "NAME"} {
		f, _ := factory(name)
		row, ok := rows[name]
		if !ok {
			t.Errorf("docs/configuration.md has no row for source %s", name)
			continue
		}
		for _, o := range f.Options {
			if !strings.Contains(row, "`"+o+"`") {
				t.Errorf("docs/configuration.md: the row of source %s does not name its option %s", name, o)
			}
		}
	}
	for src, values := range map[string][]string{
		SourceMAC: {MACColon, MACUnderscore, MACPlain},
		SourceDMI: DMIFields,
	} {
		for _, v := range values {
			if !strings.Contains(rows[src], "`"+v+"`") {
				t.Errorf("docs/configuration.md: the row of source %s does not name %s", src, v)
			}
		}
	}
	if !strings.Contains(string(b), "`"+DefaultCommandTimeout.String()+"`") {
		t.Errorf("docs/configuration.md does not give the command timeout's default %s", DefaultCommandTimeout)
	}
}
