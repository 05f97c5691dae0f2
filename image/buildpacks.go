package image

// This file: Cloud Native Buildpacks base images (run and build images)
// as the platform specification asks for them (API 0.12 to 0.15, "Build
// image", "Run image" and "Target data"; SPEC.md section 8.3 and
// docs/buildpacks.md list each requirement and how it is met).

import (
	"encoding/json"
	"path"
	"strconv"
	"strings"
	"time"
)

// Buildpacks label keys (platform API 0.12 and later, and the stack
// labels older lifecycles read).
const (
	LabelBaseID          = "io.buildpacks.base.id"
	LabelBaseMaintainer  = "io.buildpacks.base.maintainer"
	LabelBaseHomepage    = "io.buildpacks.base.homepage"
	LabelBaseReleased    = "io.buildpacks.base.released"
	LabelBaseDescription = "io.buildpacks.base.description"
	LabelBaseMetadata    = "io.buildpacks.base.metadata"
	LabelRebasable       = "io.buildpacks.rebasable"
	LabelStackID         = "io.buildpacks.stack.id"     // platform API < 0.12
	LabelStackMixins     = "io.buildpacks.stack.mixins" // platform API < 0.12
)

// The Buildpacks user's default ids: the run image's and the build
// image's differ (the specification asks run images for a user other
// than the build image's) and share the group.
const (
	buildpacksUser    = "cnb"
	runUserDefault    = "1000:1000"
	buildUserDefault  = "1001:1000"
	defaultMaintainer = "nixoci"
	defaultHomepage   = "https://github.com/nixoci/nixoci"
)

// buildpacksUserIDs is the user of a Buildpacks image: --user, else the
// default of its kind. A build image's must not be root.
func buildpacksUserIDs(opts Options) (uid, gid int, err error) {
	user := opts.User
	if user == "" {
		user = runUserDefault
		if opts.BuildpacksBuild {
			user = buildUserDefault
		}
	}
	uid, gid, err = parseUser(user)
	if err == nil && uid == 0 && opts.BuildpacksBuild {
		err = &OptionError{"User", strconv.Quote(user), "a Buildpacks build image needs a user other than root"}
	}
	return uid, gid, err
}

// buildpacksConfig sets the environment and labels of a Buildpacks
// image: env gets CNB_USER_ID and CNB_GROUP_ID of the image's user (and
// CNB_STACK_ID on build images, for lifecycles before platform API
// 0.12); labels get the base image's, each unless the maker set it.
func buildpacksConfig(opts Options, uid, gid int, roots []string, env []string, labels map[string]string) []string {
	env = append(env, "CNB_USER_ID="+strconv.Itoa(uid), "CNB_GROUP_ID="+strconv.Itoa(gid))
	if opts.BuildpacksBuild {
		env = append(env, "CNB_STACK_ID="+opts.BuildpacksStack)
	}
	var names []string
	for _, r := range roots {
		names = append(names, path.Base(r)[33:])
	}
	meta, _ := json.Marshal(map[string]any{"roots": roots})
	defaults := map[string]string{
		LabelBaseID:          opts.BuildpacksStack,
		LabelStackID:         opts.BuildpacksStack,
		LabelStackMixins:     "[]",
		LabelBaseMaintainer:  defaultMaintainer,
		LabelBaseHomepage:    defaultHomepage,
		LabelBaseDescription: "Nix closure of " + strings.Join(names, ", "),
		LabelBaseMetadata:    string(meta),
	}
	if !opts.BuildpacksBuild {
		defaults[LabelRebasable] = "true"
	}
	if !opts.Created.IsZero() {
		defaults[LabelBaseReleased] = opts.Created.UTC().Format(time.RFC3339)
	}
	for k, v := range defaults {
		if _, set := labels[k]; !set {
			labels[k] = v
		}
	}
	return env
}
