package imageregistry

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/nixoci/nixoci/image"
)

// NameSpec is what a friendly name stands for. Options of later
// components in a repository name override earlier ones.
type NameSpec struct {
	Closures   []string `json:"closures"`
	LinkRoots  []string `json:"linkRoots,omitempty"` // default: the closures' roots
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	User       string   `json:"user,omitempty"`
	// BuildpacksStack makes the image a Cloud Native Buildpacks base
	// image (a run image; a build image with BuildpacksBuild).
	BuildpacksStack string `json:"buildpacksStack,omitempty"`
	BuildpacksBuild bool   `json:"buildpacksBuild,omitempty"`
}

// LoadNames reads a JSON object mapping names to NameSpecs.
func LoadNames(path string) (map[string]NameSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var names map[string]NameSpec
	if err := json.Unmarshal(data, &names); err != nil {
		return nil, fmt.Errorf("names file %s: %w", path, err)
	}
	for n, s := range names {
		if !nameComponent.MatchString(n) {
			return nil, fmt.Errorf("names file %s: %q is not a valid repository name component", path, n)
		}
		if len(s.Closures) == 0 {
			return nil, fmt.Errorf("names file %s: %q names no closures", path, n)
		}
	}
	return names, nil
}

// Limits on repository names, so a request cannot make us compose
// without bound.
const (
	maxNameLength     = 255
	maxNameComponents = 16
)

var nameComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)

func checkName(name string) error {
	if len(name) > maxNameLength {
		return fmt.Errorf("repository name longer than %d characters", maxNameLength)
	}
	parts := strings.Split(name, "/")
	if len(parts) > maxNameComponents {
		return fmt.Errorf("more than %d closures in one name", maxNameComponents)
	}
	for _, p := range parts {
		if !nameComponent.MatchString(p) {
			return fmt.Errorf("%q is not a valid repository name component", p)
		}
	}
	return nil
}

// composition is what a repository name resolves to.
type composition struct {
	closures []string
	opts     image.Options
	explicit bool // link roots given by Names
}

// composeSpec resolves a repository name into closure tags and options.
func (g *Registry) composeSpec(name string) composition {
	c := composition{opts: g.opts.Image}
	c.opts.DefaultCmd = true // used only if no entrypoint or cmd is named
	for _, part := range strings.Split(name, "/") {
		ns, ok := g.opts.Names[part]
		if !ok {
			c.closures = append(c.closures, part)
			continue
		}
		c.closures = append(c.closures, ns.Closures...)
		if len(ns.LinkRoots) > 0 {
			c.opts.LinkRoots = append(c.opts.LinkRoots, ns.LinkRoots...)
			c.explicit = true
		}
		if ns.Entrypoint != nil {
			c.opts.Entrypoint = ns.Entrypoint
		}
		if ns.Cmd != nil {
			c.opts.Cmd = ns.Cmd
		}
		c.opts.Env = append(c.opts.Env, ns.Env...)
		if ns.User != "" {
			c.opts.User = ns.User
		}
		if ns.BuildpacksStack != "" {
			c.opts.BuildpacksStack = ns.BuildpacksStack
		}
		c.opts.BuildpacksBuild = c.opts.BuildpacksBuild || ns.BuildpacksBuild
	}
	slices.Sort(c.closures)
	c.closures = slices.Compact(c.closures)
	return c
}
