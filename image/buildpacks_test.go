package image_test

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/image"
	"github.com/nixoci/nixoci/internal/fixture"
)

// builtImage is an image read back from a layout: its config and the
// root layer's entries (with file contents).
type builtImage struct {
	cfg   ocispec.Image
	root  map[string]*tar.Header
	files map[string]string
}

func readBuilt(t *testing.T, l *backend.Layout, res *image.Result) builtImage {
	t.Helper()
	ctx := t.Context()
	img := res.Images[0]
	data, err := content.FetchAll(ctx, l, img.Config)
	if err != nil {
		t.Fatal(err)
	}
	b := builtImage{root: map[string]*tar.Header{}, files: map[string]string{}}
	if err := json.Unmarshal(data, &b.cfg); err != nil {
		t.Fatal(err)
	}
	rc, err := l.Fetch(ctx, img.Layers[len(img.Layers)-1].Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	gz, err := gzip.NewReader(rc)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return b
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		b.root[h.Name], b.files[h.Name] = h, string(body)
	}
}

func (b builtImage) env(key string) (string, bool) {
	for _, e := range b.cfg.Config.Env {
		if k, v, _ := strings.Cut(e, "="); k == key {
			return v, true
		}
	}
	return "", false
}

// passwdEntry is the /etc/passwd line of uid: name, gid and home.
func (b builtImage) passwdEntry(uid string) (name, gid, home string, ok bool) {
	for _, line := range strings.Split(b.files["etc/passwd"], "\n") {
		f := strings.Split(line, ":")
		if len(f) == 7 && f[2] == uid {
			return f[0], f[3], f[5], true
		}
	}
	return "", "", "", false
}

// requirement is one MUST or SHOULD of the Cloud Native Buildpacks
// platform specification, API 0.12 to 0.15 (sections "Build image",
// "Run image" and "Target data"; docs/buildpacks.md has the table).
type requirement struct {
	level, text string
	build, run  bool
	check       func(b builtImage) bool
}

var requirements = []requirement{
	{"MUST", "User is a non-root user with a writable home directory", true, false, func(b builtImage) bool {
		uid, gid, _ := strings.Cut(b.cfg.Config.User, ":")
		_, _, home, ok := b.passwdEntry(uid)
		h := b.root[strings.TrimPrefix(home, "/")+"/"]
		return ok && uid != "0" && uid != "" && h != nil && h.Typeflag == tar.TypeDir &&
			strconv.Itoa(h.Uid) == uid && strconv.Itoa(h.Gid) == gid && h.Mode&0o200 != 0
	}},
	{"MUST", "Env CNB_USER_ID is the UID of User", true, false, func(b builtImage) bool {
		uid, _, _ := strings.Cut(b.cfg.Config.User, ":")
		v, ok := b.env("CNB_USER_ID")
		return ok && v == uid
	}},
	{"MUST", "Env CNB_GROUP_ID is the primary GID of User", true, false, func(b builtImage) bool {
		uid, gid, _ := strings.Cut(b.cfg.Config.User, ":")
		_, pgid, _, ok := b.passwdEntry(uid)
		v, set := b.env("CNB_GROUP_ID")
		return ok && set && v == gid && v == pgid
	}},
	{"MUST", "Env PATH is set", true, true, func(b builtImage) bool {
		_, ok := b.env("PATH")
		return ok
	}},
	{"MUST", "os and architecture are valid OCI identifiers", true, true, func(b builtImage) bool {
		return b.cfg.OS == "linux" && b.cfg.Architecture == "amd64"
	}},
	{"SHOULD", "label io.buildpacks.base.maintainer", true, true, labelSet(image.LabelBaseMaintainer)},
	{"SHOULD", "label io.buildpacks.base.homepage", true, true, func(b builtImage) bool {
		u, err := url.Parse(b.cfg.Config.Labels[image.LabelBaseHomepage])
		return err == nil && u.Scheme == "https"
	}},
	{"SHOULD", "label io.buildpacks.base.released (given a time)", true, true, func(b builtImage) bool {
		_, err := time.Parse(time.RFC3339, b.cfg.Config.Labels[image.LabelBaseReleased])
		return err == nil
	}},
	{"SHOULD", "label io.buildpacks.base.description", true, true, labelSet(image.LabelBaseDescription)},
	{"SHOULD", "label io.buildpacks.base.metadata", true, true, func(b builtImage) bool {
		return json.Valid([]byte(b.cfg.Config.Labels[image.LabelBaseMetadata]))
	}},
	{"SHOULD", "User has a UID other than the build image's", false, true, func(b builtImage) bool {
		return b.cfg.Config.User != "" && !strings.HasPrefix(b.cfg.Config.User, "1001:")
	}},
	{"SHOULD", "label io.buildpacks.rebasable is true", false, true, func(b builtImage) bool {
		return b.cfg.Config.Labels[image.LabelRebasable] == "true"
	}},
	{"SHOULD", "label io.buildpacks.base.id (target data)", false, true, func(b builtImage) bool {
		return b.cfg.Config.Labels[image.LabelBaseID] == "org.example.nix"
	}},
	// Before platform API 0.12 (still read by lifecycles that run older
	// platform APIs, and by pack to match builders).
	{"MUST<0.12", "label io.buildpacks.stack.id and Env CNB_STACK_ID (build)", true, true, func(b builtImage) bool {
		v, ok := b.env("CNB_STACK_ID")
		return b.cfg.Config.Labels[image.LabelStackID] == "org.example.nix" && (ok && v == "org.example.nix" || !strings.HasPrefix(b.cfg.Config.User, "1001:"))
	}},
	{"MUST<0.12", "label io.buildpacks.stack.mixins is a JSON array", true, true, func(b builtImage) bool {
		var mixins []string
		return json.Unmarshal([]byte(b.cfg.Config.Labels[image.LabelStackMixins]), &mixins) == nil
	}},
}

func labelSet(key string) func(builtImage) bool {
	return func(b builtImage) bool { return b.cfg.Config.Labels[key] != "" }
}

// TestBuildpacksImages: run and build images made with BuildpacksStack
// meet every MUST and SHOULD of the platform specification (API 0.15)
// that applies to them, with the defaults and with --user; both of one
// closure have the same os, architecture and (absent) distro.
func TestBuildpacksImages(t *testing.T) {
	l := fixture.Layout(t)
	fixture.SystemClosure(t, l, "c", fixture.SystemPath{Name: "base", System: "x86_64-linux"})
	created := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	build := func(opts image.Options) builtImage {
		t.Helper()
		opts.BuildpacksStack, opts.Created = "org.example.nix", created
		res, err := image.Build(t.Context(), l, "c", l, "img", opts)
		if err != nil {
			t.Fatal(err)
		}
		return readBuilt(t, l, res)
	}
	for _, tc := range []struct {
		name  string
		opts  image.Options
		build bool
		user  string
	}{
		{"run image", image.Options{}, false, "1000:1000"},
		{"build image", image.Options{BuildpacksBuild: true}, true, "1001:1000"},
		{"run image --user", image.Options{User: "1002:1000"}, false, "1002:1000"},
		{"build image --user", image.Options{BuildpacksBuild: true, User: "2000:3000"}, true, "2000:3000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := build(tc.opts)
			if b.cfg.Config.User != tc.user {
				t.Errorf("User %q, want %q", b.cfg.Config.User, tc.user)
			}
			for _, r := range requirements {
				if (tc.build && r.build || !tc.build && r.run) && !r.check(b) {
					t.Errorf("%s: %s not met\nconfig %+v", r.level, r.text, b.cfg.Config)
				}
			}
		})
	}
	run, bld := build(image.Options{}), build(image.Options{BuildpacksBuild: true})
	if run.cfg.OS != bld.cfg.OS || run.cfg.Architecture != bld.cfg.Architecture || run.cfg.Variant != bld.cfg.Variant ||
		run.cfg.Config.Labels["io.buildpacks.base.distro.name"] != bld.cfg.Config.Labels["io.buildpacks.base.distro.name"] {
		t.Errorf("MUST: the build and run images of one closure differ in platform or distro: %+v / %+v", run.cfg.Platform, bld.cfg.Platform)
	}
}

// TestBuildpacksHome: the Buildpacks user's home directory exists, owned
// by the user (so writable), with the default user and with --user.
func TestBuildpacksHome(t *testing.T) {
	l := fixture.Layout(t)
	fixture.SystemClosure(t, l, "c", fixture.SystemPath{Name: "base"})
	for _, user := range []string{"", "1002:1000"} {
		res, err := image.Build(t.Context(), l, "c", l, "img", image.Options{BuildpacksStack: "org.example.nix", User: user})
		if err != nil {
			t.Fatal(err)
		}
		b := readBuilt(t, l, res)
		uid, gid, _ := strings.Cut(b.cfg.Config.User, ":")
		_, _, home, ok := b.passwdEntry(uid)
		h := b.root[strings.TrimPrefix(home, "/")+"/"]
		if !ok || h == nil || strconv.Itoa(h.Uid) != uid || strconv.Itoa(h.Gid) != gid || h.Mode&0o200 == 0 {
			t.Errorf("--user %q: home %q of uid %s: %+v, want a directory the user owns", user, home, uid, h)
		}
	}
}

// buildpacksWithUser builds a Buildpacks run image with --user 1002:1000.
func buildpacksWithUser(t *testing.T) builtImage {
	l := fixture.Layout(t)
	fixture.SystemClosure(t, l, "c", fixture.SystemPath{Name: "base"})
	res, err := image.Build(t.Context(), l, "c", l, "img", image.Options{BuildpacksStack: "org.example.nix", User: "1002:1000"})
	if err != nil {
		t.Fatal(err)
	}
	return readBuilt(t, l, res)
}

// TestBuildpacksUser: with --user, the CNB ids are --user's and
// /etc/passwd has that one user.
func TestBuildpacksUser(t *testing.T) {
	b := buildpacksWithUser(t)
	for key, want := range map[string]string{"CNB_USER_ID": "1002", "CNB_GROUP_ID": "1000"} {
		if v, _ := b.env(key); v != want {
			t.Errorf("%s=%s, want %s (--user 1002:1000)", key, v, want)
		}
	}
	if _, _, _, ok := b.passwdEntry("1000"); ok {
		t.Errorf("/etc/passwd still lists uid 1000:\n%s", b.files["etc/passwd"])
	}
}

// TestBuildpacksGroups: /etc/group lists no gid twice when --user's
// group is the Buildpacks default's.
func TestBuildpacksGroups(t *testing.T) {
	b := buildpacksWithUser(t)
	seen := map[string]bool{}
	for _, line := range strings.Fields(b.files["etc/group"]) {
		gid := strings.Split(line, ":")[2]
		if seen[gid] {
			t.Errorf("gid %s listed twice in /etc/group:\n%s", gid, b.files["etc/group"])
		}
		seen[gid] = true
	}
}

// TestBuildpacksRefusesRootBuildUser: a build image must not run as root.
func TestBuildpacksRefusesRootBuildUser(t *testing.T) {
	l := fixture.Layout(t)
	fixture.SystemClosure(t, l, "c", fixture.SystemPath{Name: "base"})
	_, err := image.Build(t.Context(), l, "c", l, "img", image.Options{BuildpacksStack: "x", BuildpacksBuild: true, User: "0:0"})
	var opt *image.OptionError
	if !errors.As(err, &opt) || opt.Option != "User" {
		t.Errorf("root build user: %v, want an OptionError for User", err)
	}
}

// TestHistory: one history entry per layer, naming its store path or
// the root layer's role, without a time unless one is given.
func TestHistory(t *testing.T) {
	l := fixture.Layout(t)
	fixture.SystemClosure(t, l, "c", fixture.SystemPath{Name: "app", System: "x86_64-linux"}, fixture.SystemPath{Name: "lib"})
	for _, created := range []time.Time{{}, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)} {
		res, err := image.Build(t.Context(), l, "c", l, "img", image.Options{Created: created, LinkRoots: []string{fixture.StorePath("app")}})
		if err != nil {
			t.Fatal(err)
		}
		b := readBuilt(t, l, res)
		paths := []string{fixture.StorePath("app"), fixture.StorePath("lib")}
		slices.Sort(paths) // layers are in store-path order
		want := []string{"nixoci: store path " + paths[0], "nixoci: store path " + paths[1],
			"nixoci: root filesystem: /bin /data /etc /link /root /tmp"}
		if len(b.cfg.History) != len(want) || len(b.cfg.RootFS.DiffIDs) != len(want) {
			t.Fatalf("%d history entries, %d layers; want %d", len(b.cfg.History), len(b.cfg.RootFS.DiffIDs), len(want))
		}
		for i, h := range b.cfg.History {
			if h.CreatedBy != want[i] || h.EmptyLayer {
				t.Errorf("history %d: %q, want %q", i, h.CreatedBy, want[i])
			}
			if (h.Created == nil) != created.IsZero() || h.Created != nil && !h.Created.Equal(created) {
				t.Errorf("history %d: created %v, want %v", i, h.Created, created)
			}
		}
		if (b.cfg.Created == nil) != created.IsZero() {
			t.Errorf("config created %v, want %v", b.cfg.Created, created)
		}
	}
}

// TestDefaultCmd: asked to, an image without a command gets its first
// link root's main program, else the only program in /bin, else none.
func TestDefaultCmd(t *testing.T) {
	l := fixture.Layout(t)
	fixture.SystemClosure(t, l, "one", fixture.SystemPath{Name: "tool-1.2"})
	fixture.SystemClosure(t, l, "two", fixture.SystemPath{Name: "run-0.1"}, fixture.SystemPath{Name: "other"})
	for _, tc := range []struct {
		closure string
		opts    image.Options
		want    []string
	}{
		{"one", image.Options{DefaultCmd: true, LinkRoots: []string{fixture.StorePath("tool-1.2")}}, []string{"/bin/run"}},
		{"two", image.Options{DefaultCmd: true, LinkRoots: []string{fixture.StorePath("run-0.1")}}, []string{"/bin/run"}},
		{"one", image.Options{DefaultCmd: true}, nil},
		{"one", image.Options{LinkRoots: []string{fixture.StorePath("tool-1.2")}}, nil},
		{"one", image.Options{DefaultCmd: true, Cmd: []string{"x"}, LinkRoots: []string{fixture.StorePath("tool-1.2")}}, []string{"x"}},
	} {
		res, err := image.Build(t.Context(), l, tc.closure, l, "img", tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := readBuilt(t, l, res).cfg.Config.Cmd; strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%s %+v: Cmd %q, want %q", tc.closure, tc.opts, got, tc.want)
		}
	}
}
