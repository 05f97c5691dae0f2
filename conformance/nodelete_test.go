package conformance

import (
	"strings"
	"testing"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// TestRegistryWithoutDeletes: distribution refuses deletes unless
// storage.delete.enabled is set, and that is its default. On a registry
// without the referrers API, storing a manifest with a subject (a push
// record, a closure index) replaces the subject's referrers index, and
// oras-go then deletes the index it replaced; the registry's refusal must
// not fail a push whose manifest is stored. Pushing one closure 18 times
// (a push record each; past 16 its referrers index is pruned to the
// newest 8, artifact.PruneRecords) and copying it twice to another
// repository, under two tags, all succeed; the records kept are found
// through the referrers tag schema (oras discover), and both
// repositories substitute with the real Nix.
func TestRegistryWithoutDeletes(t *testing.T) {
	fx := testenv.BuildFixture(t, "nodel")
	key := testenv.GenerateKey(t, "nodel-1")
	for _, program := range []string{"docker-registry", "registry"} {
		t.Run(program, func(t *testing.T) {
			reg := testenv.StartRegistry(t, testenv.RegistryOptions{Program: program})
			reg.SetDeletes(false)
			target, copied := reg.Ref("cache"), reg.Ref("copy")
			// Enough pushes that the closure's referrers index is pruned
			// once (artifact.PruneRecords): records kept, then one more.
			pushes := artifact.RecordsPruneAt + 2
			for range pushes {
				run(t, "push", "--to", target+":app", "--sign-key", key.SecretFile, fx.App)
			}
			for _, tag := range []string{"app", "other"} {
				run(t, "copy", target+":app", copied+":"+tag)
			}
			for ref, want := range map[string]int{target: artifact.RecordsKept + 1, copied: 2} {
				out := oras(t, "discover", "--plain-http", "--artifact-type", spec.ArtifactTypePushRecord, "--format", "json", ref+":app")
				if n := strings.Count(out, `"`+spec.ArtifactTypePushRecord+`"`); n != want {
					t.Errorf("%s:app has %d push records (oras discover), want %d:\n%s", ref, n, want, out)
				}
			}
			checkServesAndBuilds(t, fx, key, target, "app", "--plain-http")
			checkServesAndBuilds(t, fx, key, copied, "app", "--plain-http")
		})
	}
}
