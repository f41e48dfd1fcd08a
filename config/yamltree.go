package config

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// parseYAML reads config.yaml into a nested map whose scalars are the
// literal text the user wrote (nil for null). Keeping the text, instead of
// YAML's guess at a type, matters for template parameters: a serial number
// written 0x1F or 0123 must reach the cloud as written, not as 31 or 83.
// Values from the file, the environment and flags are thus all strings,
// and one set of parsers handles them.
func parseYAML(b []byte) (map[string]any, error) {
	// Decoding into a plain value first catches what the Node API lets
	// through: duplicate keys, recursive aliases.
	var probe any
	if err := yaml.Unmarshal(b, &probe); err != nil {
		return nil, yamlError(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, yamlError(err)
	}
	// yaml.Unmarshal reads the first document only: a second would be
	// ignored here, then lost when the provisioned values are written
	// back. Greengrass reads one document.
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var first, second yaml.Node
	if err := dec.Decode(&first); err == nil {
		if err := dec.Decode(&second); err == nil {
			return nil, &multiDocError{line: second.Line}
		}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return map[string]any{}, nil
	}
	root := doc.Content[0]
	for root.Kind == yaml.AliasNode {
		root = root.Alias
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return map[string]any{}, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, &sectionError{found: yamlKind(root), line: root.Line}
	}
	return nodeValue(root).(map[string]any), nil
}

// sections are the mappings fleetprov reads keys from, by koanf path.
var sections = []string{
	"system",
	"services",
	"services/aws.greengrass.NucleusLite",
	"services/aws.greengrass.NucleusLite/configuration",
	"services/aws.greengrass.NucleusLite/configuration/runWithDefault",
	"services/aws.greengrass.fleet_provisioning",
	"services/aws.greengrass.fleet_provisioning/configuration",
}

// checkSections finds a section of config.yaml written as something other
// than a mapping: read as it stands, every key in it would be reported
// missing, which points the user at the wrong line. It returns the
// sections that are null (a "services:" with nothing under it), by path
// with their line: such a section is as good as an empty one, and is
// reported only when a required key is then missing from it.
func checkSections(b []byte) (map[string]int, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil || len(doc.Content) == 0 {
		return nil, nil // parseYAML reports it
	}
	nulls := map[string]int{}
	for _, path := range sections {
		n, line := deref(doc.Content[0]), 0
		for _, name := range strings.Split(path, "/") {
			if n == nil || n.Kind != yaml.MappingNode {
				n = nil
				break
			}
			n, line = lookup(n, name)
		}
		switch {
		case n == nil || n.Kind == yaml.MappingNode:
		case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null":
			nulls[path] = line
		default:
			return nil, &sectionError{path: path, found: yamlKind(n), line: line}
		}
	}
	return nulls, nil
}

// lookup finds name's value in mapping m, and the line of its key, as
// nodeValue reads it: the mapping's own key first, then those merged in
// with "<<", the first merge winning.
func lookup(m *yaml.Node, name string) (*yaml.Node, int) {
	var merges []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, deref(v))
			continue
		}
		if k.Value == name {
			return deref(v), k.Line
		}
	}
	for _, mv := range merges {
		list := []*yaml.Node{mv}
		if mv.Kind == yaml.SequenceNode {
			list = mv.Content
		}
		for _, item := range list {
			if item = deref(item); item.Kind == yaml.MappingNode {
				if v, line := lookup(item, name); v != nil {
					return v, line
				}
			}
		}
	}
	return nil, 0
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// yamlKind names what a node holds, for a message.
func yamlKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.ShortTag() {
	case "!!null":
		return "empty (null)"
	case "!!str":
		return "a string"
	case "!!int", "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	}
	return "a single value"
}

// sectionError is a section of config.yaml (or its top level, when path is
// empty) that is not a mapping.
type sectionError struct {
	path  string // koanf path; "" for the top level
	found string // yamlKind
	line  int
}

func (e *sectionError) Error() string {
	if e.path == "" {
		return fmt.Sprintf("its top level (line %d) is %s, not a mapping: write the sections system and services at the top level, as in Greengrass's config.yaml", e.line, e.found)
	}
	return fmt.Sprintf("%s (line %d) is %s, not a mapping: write the section's keys indented under it", dotted(e.path), e.line, e.found)
}

func nodeValue(n *yaml.Node) any {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return nodeValue(n.Content[0])
	case yaml.AliasNode:
		return nodeValue(n.Alias)
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return nil
		}
		return n.Value
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			out = append(out, nodeValue(c))
		}
		return out
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		var merges []any
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
				merges = append(merges, nodeValue(v))
				continue
			}
			out[k.Value] = nodeValue(v)
		}
		// "<<: *base" fills in what the mapping does not set itself.
		for _, m := range merges {
			list, ok := m.([]any)
			if !ok {
				list = []any{m}
			}
			for _, item := range list {
				mm, ok := item.(map[string]any)
				if !ok {
					continue
				}
				for k, v := range mm {
					if _, set := out[k]; !set {
						out[k] = v
					}
				}
			}
		}
		return out
	}
	return nil
}

// yamlError makes a YAML error one line without the package's "yaml: "
// prefix: "line 3: mapping values are not allowed in this context".
func yamlError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.New(strings.Join(te.Errors, "; "))
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	return errors.New(strings.Join(strings.Fields(msg), " "))
}

// multiDocError is a config file holding a second YAML document.
type multiDocError struct{ line int }

func (e *multiDocError) Error() string {
	return fmt.Sprintf("holds more than one YAML document (a second starts at line %d): Greengrass reads only the first, and writing the provisioned values back would drop the rest; keep the configuration in one document", e.line)
}
