package image

// This file: the history entry of each layer (SPEC.md section 8.3), so
// that `docker history` reads as a table of store paths and tools that
// append layers (go-containerregistry's mutate.Append) count layers and
// history alike.

import (
	"sort"
	"strings"
)

// historyPrefix starts every created_by nixoci writes.
const historyPrefix = "nixoci: "

// createdBy is the layer's history entry: the store paths it holds, or
// its role.
func (l Layer) createdBy() string {
	if l.role != "" {
		return historyPrefix + l.role
	}
	paths := make([]string, len(l.Paths))
	for i, p := range l.Paths {
		paths[i] = p.Info.StorePath
	}
	if len(paths) == 1 {
		return historyPrefix + "store path " + paths[0]
	}
	return historyPrefix + "store paths " + strings.Join(paths, " ")
}

// summary lists the root layer's top-level entries, e.g. "/bin /etc /tmp".
func (r rootFS) summary() string {
	var top []string
	for name := range r {
		if !strings.Contains(strings.TrimSuffix(name, "/"), "/") {
			top = append(top, "/"+strings.TrimSuffix(name, "/"))
		}
	}
	sort.Strings(top)
	return strings.Join(top, " ")
}
