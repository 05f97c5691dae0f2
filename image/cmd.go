package image

// This file: the default command of an image whose maker named none
// (Options.DefaultCmd), so that a runtime that starts it without one
// (Kubernetes, `crictl create`) runs something sensible.

import (
	"archive/tar"
	"path"
	"strings"
	"unicode"
)

// defaultCmd picks the command of an image from its root layer: the main
// program of the first link root that has one (bin/<name without
// version>, as `nix run` picks it), else the only program in /bin, else
// /bin/sh; nil if none applies.
func defaultCmd(root rootFS, linkRoots []string) []string {
	for _, lr := range linkRoots {
		if prog := "bin/" + programName(lr); root.isLink(prog) {
			return []string{"/" + prog}
		}
	}
	var progs []string
	for name := range root {
		if strings.HasPrefix(name, "bin/") && root.isLink(name) {
			progs = append(progs, name)
		}
	}
	switch {
	case len(progs) == 1:
		return []string{"/" + progs[0]}
	case root.isLink("bin/sh"):
		return []string{"/bin/sh"}
	}
	return nil
}

// programName is a store path's name without its version, as Nix's
// parseDrvName splits it: "…-hello-2.12.1" gives "hello".
func programName(storePath string) string {
	base := path.Base(storePath)
	_, name, _ := strings.Cut(base, "-") // the hash part
	parts := strings.Split(name, "-")
	for i, p := range parts {
		if i > 0 && p != "" && unicode.IsDigit(rune(p[0])) {
			return strings.Join(parts[:i], "-")
		}
	}
	return name
}

// isLink reports whether the root layer has a symlink named name.
func (r rootFS) isLink(name string) bool {
	e, ok := r[name]
	return ok && e.typ == tar.TypeSymlink
}
