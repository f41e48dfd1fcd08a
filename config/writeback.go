package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/fleetprov/fleetprov/atomicfile"
)

// Provisioned is what a finished provisioning run records in config.yaml.
type Provisioned struct {
	ThingName           string // system.thingName
	CertificateFilePath string // system.certificateFilePath
	PrivateKeyPath      string // system.privateKeyPath
	RootCAPath          string // system.rootCaPath
	IoTDataEndpoint     string // NucleusLite configuration.iotDataEndpoint
	IoTCredEndpoint     string // NucleusLite configuration.iotCredEndpoint
}

// IsProvisioned applies Greengrass lite's rule: a device is provisioned
// once system.certificateFilePath is set.
func IsProvisioned(c *Config) bool { return c != nil && c.CertificateFilePath != "" }

// WriteBack records v in the config file at path. It edits the YAML node
// tree, so comments, key order, quoting and every other value stay as they
// were; missing keys (and their parents) are created. Every field is
// written as given, so the six values always agree: an empty field sets an
// existing key to "" (WriteBack(path, Provisioned{}) clears a device's
// provisioned state, as reset does) and creates no missing key.
//
// The whole file is replaced atomically (temp file, fsync, rename, fsync
// dir) with its mode and owner kept, so a reader sees all the values or
// none. Greengrass lite writes certificateFilePath last because its
// presence means "provisioned"; here it is in the same single write as the
// rest. A symlinked config is updated where the link points. A missing
// file, or one without write permission, is an error and is left alone:
// fleetprov does not override a read-only mark even when run as root.
func WriteBack(path string, v Provisioned) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("update config %s: %w", path, err)
	}
	info, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("update config %s: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("update config %s: not a regular file", path)
	}
	if info.Mode().Perm()&0o200 == 0 {
		return fmt.Errorf("update config %s: the file is read-only: make it writable (chmod u+w) so the provisioned values can be saved", path)
	}
	data, err := os.ReadFile(real)
	if err != nil {
		return fmt.Errorf("update config %s: %w", path, err)
	}
	out, err := updateYAML(data, v)
	if err != nil {
		return fmt.Errorf("update config %s: %w", path, err)
	}
	var opts atomicfile.Options
	opts.Owner = fileOwner(info)
	if err := atomicfile.WriteFile(real, out, info.Mode().Perm(), opts); err != nil {
		return fmt.Errorf("update config %s: %w", path, err)
	}
	return nil
}

// updateYAML returns data with v's values set.
func updateYAML(data []byte, v Provisioned) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", yamlError(err))
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode}
	}
	if len(doc.Content) == 0 {
		doc.Content = []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		*root = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", HeadComment: root.HeadComment, LineComment: root.LineComment, FootComment: root.FootComment}
	}
	if root.Kind != yaml.MappingNode {
		return nil, errors.New("its top level is not a mapping of keys to values")
	}
	indent := detectIndent(root)

	// certificateFilePath goes last: when it is new it is appended after
	// the others, the order Greengrass lite writes them in.
	sets := []struct {
		path []string
		val  string
	}{
		{[]string{"system", "thingName"}, v.ThingName},
		{[]string{"system", "privateKeyPath"}, v.PrivateKeyPath},
		{[]string{"system", "rootCaPath"}, v.RootCAPath},
		{[]string{"services", "aws.greengrass.NucleusLite", "configuration", "iotDataEndpoint"}, v.IoTDataEndpoint},
		{[]string{"services", "aws.greengrass.NucleusLite", "configuration", "iotCredEndpoint"}, v.IoTCredEndpoint},
		{[]string{"system", "certificateFilePath"}, v.CertificateFilePath},
	}
	for _, s := range sets {
		if err := setString(root, s.path, s.val, s.val != ""); err != nil {
			return nil, err
		}
	}

	var buf bytes.Buffer
	if bytes.HasPrefix(bytes.TrimLeft(data, "\ufeff"), []byte("---")) {
		buf.WriteString("---\n")
	}
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(indent)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// setString sets the scalar at path under mapping m, creating what is
// missing if create is set (otherwise a missing key is left missing). An
// existing quoted scalar keeps its quotes and comments.
func setString(m *yaml.Node, path []string, val string, create bool) error {
	for i, name := range path {
		var key, child *yaml.Node
		for j := 0; j+1 < len(m.Content); j += 2 {
			if m.Content[j].Value == name {
				key, child = m.Content[j], m.Content[j+1]
				break
			}
		}
		if child == nil && !create {
			return nil
		}
		if i == len(path)-1 {
			if child == nil {
				m.Content = append(m.Content,
					&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: name},
					&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: val, Style: yaml.DoubleQuotedStyle})
				return nil
			}
			style := child.Style & (yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle)
			if child.Kind != yaml.ScalarNode {
				style = yaml.DoubleQuotedStyle
			}
			*child = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: val, Style: style,
				HeadComment: child.HeadComment, LineComment: child.LineComment, FootComment: child.FootComment}
			return nil
		}
		switch {
		case child == nil:
			child = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: name}, child)
		case child.Kind == yaml.ScalarNode && child.ShortTag() == "!!null":
			*child = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map",
				HeadComment: child.HeadComment, LineComment: child.LineComment, FootComment: child.FootComment}
		case child.Kind != yaml.MappingNode:
			return fmt.Errorf("%s (line %d) is not a mapping, so %s cannot be set in it", strings.Join(path[:i+1], "."), key.Line, path[len(path)-1])
		}
		m = child
	}
	return nil
}

// detectIndent finds the file's indentation step from its first nested
// block mapping, so that the rewritten file is indented as before.
func detectIndent(root *yaml.Node) int {
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if v.Kind == yaml.MappingNode && v.Style&yaml.FlowStyle == 0 && len(v.Content) > 0 {
			if d := v.Content[0].Column - k.Column; d >= 2 && d <= 8 {
				return d
			}
		}
	}
	return 2
}

// checkWritable refuses a config the provisioned values could not be
// written into (system, say, a scalar where they go in a mapping): a run
// would otherwise make a certificate and a thing in the cloud and only
// then fail to record them.
func checkWritable(data []byte) error {
	const x = "x"
	_, err := updateYAML(data, Provisioned{ThingName: x, CertificateFilePath: x, PrivateKeyPath: x, RootCAPath: x, IoTDataEndpoint: x, IoTCredEndpoint: x})
	if err != nil {
		return fmt.Errorf("%w: make it a mapping (or remove it) so that the provisioned values can be recorded there", err)
	}
	return nil
}
