package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// A link in the docs to a file that was renamed, or to a heading that was
// reworded, sends a reader to nothing; this keeps the README and docs/
// pointing at what exists.

var (
	mdLink    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	mdHeading = regexp.MustCompile("(?m)^#{1,6} +(.+?) *$")
	mdFence   = regexp.MustCompile("(?ms)^```.*?^```")
)

// anchorOf turns a heading into the anchor GitHub gives it: lower case,
// punctuation other than '-' and '_' dropped, spaces as '-'.
func anchorOf(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchorsIn(t *testing.T, file string) map[string]bool {
	t.Helper()
	body, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	text := mdFence.ReplaceAllString(string(body), "")
	anchors := map[string]bool{}
	for _, m := range mdHeading.FindAllStringSubmatch(text, -1) {
		// Inline code and links in a heading keep only their text.
		h := strings.NewReplacer("`", "", "[", "", "]", "").Replace(m[1])
		a := anchorOf(h)
		for i := 1; anchors[a]; i++ {
			a = anchorOf(h) + "-" + string(rune('0'+i))
		}
		anchors[a] = true
	}
	return anchors
}

func TestDocsLinksResolve(t *testing.T) {
	root := filepath.Join("..", "..")
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(root, "README.md"), filepath.Join(root, "configs", "README.md"))
	checked := 0
	for _, file := range files {
		body, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		text := mdFence.ReplaceAllString(string(body), "")
		for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			path, anchor, _ := strings.Cut(link, "#")
			target := file
			if path != "" {
				target = filepath.Join(filepath.Dir(file), path)
				if _, err := os.Stat(target); err != nil {
					t.Errorf("%s links to %s, which does not exist", rel(root, file), link)
					continue
				}
			}
			checked++
			if anchor == "" || !strings.HasSuffix(target, ".md") {
				continue
			}
			if !anchorsIn(t, target)[anchor] {
				t.Errorf("%s links to %s, but %s has no heading with that anchor", rel(root, file), link, rel(root, target))
			}
		}
	}
	if checked < 20 {
		t.Fatalf("checked only %d links: the link pattern no longer matches the docs", checked)
	}
}

func rel(root, path string) string {
	r, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return r
}
