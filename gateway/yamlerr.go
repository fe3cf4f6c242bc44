package gateway

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yamlErrors rewrites a YAML decoding error of file (whose bytes are data)
// as one line per problem, "file:LINE: PATH: what", naming the YAML path
// (accounts[0].kind) and never a Go type.
func yamlErrors(file string, data []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%s: %s", file, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	var out []string
	for _, e := range te.Errors {
		out = append(out, describeYAMLError(file, &root, e))
	}
	return errors.New(strings.Join(out, "\n"))
}

var (
	reUnknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type \S+$`)
	reCannot       = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
	reCannotNode   = regexp.MustCompile(`^line (\d+): cannot unmarshal !!(seq|map) into (\S+)$`)
)

func describeYAMLError(file string, root *yaml.Node, msg string) string {
	if m := reUnknownField.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		path := pathAt(root, line, m[2], true)
		return fmt.Sprintf("%s:%d: %s: unknown field %q", file, line, path, m[2])
	}
	if m := reCannot.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		path := pathAt(root, line, m[3], false)
		return fmt.Sprintf("%s:%d: %s: %q is not %s", file, line, path, m[3], kindOf(m[4]))
	}
	if m := reCannotNode.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		found := map[string]string{"seq": "a list", "map": "a mapping"}[m[2]]
		return fmt.Sprintf("%s:%d: %s: %s where %s is wanted", file, line, collectionAt(root, line), found, kindOf(m[3]))
	}
	return file + ": " + msg
}

// collectionAt returns the YAML path of the list or mapping that starts
// on line as some key's value; "(top level)" if none does. The innermost
// one on the line is the one meant (mqtt: {listen: [1, 2]} is
// mqtt.listen).
func collectionAt(root *yaml.Node, line int) string {
	collection := func(n *yaml.Node) bool { return n.Kind == yaml.SequenceNode || n.Kind == yaml.MappingNode }
	return findPath(root, true, func(k, v, in *yaml.Node, path, _ string) (string, bool) {
		if k != nil {
			return path, collection(v) && (v.Line == line || k.Line == line)
		}
		return path, collection(v) && v.Line == line && line != in.Line
	})
}

// findPath walks the document and returns what match returns for the
// first node it matches: match gets each mapping entry (k its key) and
// each sequence item (k nil), the collection it is in, its YAML path and
// its parent's path. With innermost, a node's children are tried before
// it. "(top level)" if nothing matches, or if the match is the root.
func findPath(root *yaml.Node, innermost bool, match func(k, v, in *yaml.Node, path, parent string) (string, bool)) string {
	var found string
	var walk func(n *yaml.Node, path string) bool
	try := func(k, v, in *yaml.Node, path, parent string) bool {
		if !innermost {
			if f, ok := match(k, v, in, path, parent); ok {
				found = f
				return true
			}
		}
		if walk(v, path) {
			return true
		}
		if innermost {
			if f, ok := match(k, v, in, path, parent); ok {
				found = f
				return true
			}
		}
		return false
	}
	walk = func(n *yaml.Node, path string) bool {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				if walk(c, path) {
					return true
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				if try(k, n.Content[i+1], n, p, path) {
					return true
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				if try(nil, c, n, fmt.Sprintf("%s[%d]", path, i), path) {
					return true
				}
			}
		}
		return false
	}
	walk(root, "")
	if found == "" {
		return "(top level)"
	}
	return found
}

// kindOf names what a Go type expects, in words.
func kindOf(goType string) string {
	switch {
	case goType == "time.Duration":
		return "a duration (like 10s, 5m, 1h)"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "a list (- item, or [a, b])"
	case strings.HasPrefix(goType, "map["):
		return "a mapping"
	}
	return "a mapping of settings"
}

// pathAt finds the node on line whose key (isKey) or scalar value is val
// and returns its YAML path, e.g. accounts[0].kind; for a key, the path
// of the mapping that has it.
func pathAt(root *yaml.Node, line int, val string, isKey bool) string {
	return findPath(root, false, func(k, v, _ *yaml.Node, path, parent string) (string, bool) {
		if isKey {
			return parent, k != nil && k.Line == line && k.Value == val
		}
		return path, v.Kind == yaml.ScalarNode && v.Line == line && v.Value == val
	})
}

// lineOfPath returns the line of the node at a YAML path such as
// accounts[0].kind or mqtt.broker (its key's line; for a missing field,
// the line of the nearest mapping that exists); 0 if none.
func lineOfPath(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, part := range strings.Split(path, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			name = part[:i]
			idx, _ = strconv.Atoi(part[i+1 : len(part)-1])
		}
		if name != "" {
			if n.Kind != yaml.MappingNode {
				return line
			}
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == name {
					line, next = n.Content[i].Line, n.Content[i+1]
				}
			}
			if next == nil {
				return line
			}
			n = next
		}
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		}
	}
	return line
}
