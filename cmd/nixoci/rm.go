package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/gc"
)

const rmHelp = `
Usage: nixoci rm [flags] TARGET:TAG...

Remove closure and image tags. Only tags naming a nixoci closure or image
are removed; any other tag (a store path's, another tool's artifact, a
plain image) is refused unless --force. Every tag is checked before any is
removed. What the closure alone used stays until 'nixoci gc' collects it.
A TAG alone (or :TAG) is one of the default store.

In a registry, a closure or image no other tag names is deleted with its
push records (once untagged nothing would find it again); the registry
must allow deletes (distribution: storage.delete.enabled: true).

Examples:
  nixoci rm oci:/srv/nix:hello
  nixoci rm 127.0.0.1:5000/cache:ci-41 127.0.0.1:5000/cache:ci-42
  nixoci rm 127.0.0.1:5000/cache:old && nixoci gc 127.0.0.1:5000/cache
`

func runRm(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rm", rmHelp, stdout)
	force := fs.Bool("force", false, "also remove tags naming anything else")
	asJSON := fs.Bool("json", false, "print what was removed as JSON")
	plainHTTP := fs.Bool("plain-http", false, "use plain HTTP for the registry even if it is not on loopback")
	refs, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(refs) == 0 {
		return fmt.Errorf("%w: no TARGET:TAG given", errUsage)
	}
	// Tags of one target go together, in the order given.
	type group struct {
		ref  backend.Ref
		tags []string
	}
	var groups []*group
	byTarget := map[string]*group{}
	for _, s := range refs {
		ref, err := backend.ParseRef(s)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if err := ref.ValidateTag(); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		key := ref.Base().String()
		if byTarget[key] == nil {
			byTarget[key] = &group{ref: ref.Base()}
			groups = append(groups, byTarget[key])
		}
		byTarget[key].tags = append(byTarget[key].tags, ref.Reference)
	}
	var all []gc.Removed
	for _, g := range groups {
		t, err := openRef(ctx, g.ref, *plainHTTP, false)
		if err != nil {
			return storeHint(err, g.ref)
		}
		removed, err := gc.Remove(ctx, t, g.tags, gc.RemoveOptions{Force: *force})
		err = storeHint(err, g.ref)
		all = append(all, removed...)
		for _, r := range removed {
			if !*asJSON {
				how := "untagged"
				if r.Deleted {
					how = "deleted"
				}
				fmt.Fprintf(stdout, "removed %s:%s (%s %s, %s)\n", g.ref, r.Tag, r.Kind, r.Descriptor.Digest, how)
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", g.ref, err)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(all)
	}
	fmt.Fprintln(stderr, "run nixoci gc to delete what only they used")
	return nil
}
