package conformance

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/internal/testenv"
)

// distSpecSuite is the OCI distribution-spec conformance suite's test
// binary, built by .ci/run with `go test -c` from
// github.com/opencontainers/distribution-spec/conformance at the
// version pinned there.
const distSpecSuite = "oci-conformance.test"

// distSpecSkipped are the suite's specs SPEC.md section 9 decides
// against, each with the reason (see there):
//   - its read-only mode expects OCI_MANIFEST_DIGEST to have the five
//     referrers its own setup would push; a composed image has none
//     unless someone attaches them in the backend (TestRegistryReferrers
//     shows real ones listed);
//   - "last" needs at least two tags; a composed repository has one,
//     latest (TestRegistryAPI checks n and last on it).
var distSpecSkipped = []string{
	"GET request to existing blob should yield 200",
	"GET request to existing blob with filter should yield 200",
	"GET start of tag is set by `last` query parameter",
}

// TestDistributionSpecConformance runs the OCI distribution-spec
// conformance suite's pull and content-discovery workflows (push and
// content management off: the registry is read-only) against `nixoci
// serve --registry`, on an image composed from a stored closure.
func TestDistributionSpecConformance(t *testing.T) {
	suite := testenv.Tool(t, distSpecSuite)
	layoutDir := filepath.Join(t.TempDir(), "l")
	l, err := backend.OpenLayout(layoutDir, true)
	if err != nil {
		t.Fatal(err)
	}
	fixture.SystemClosure(t, l, "app", fixture.SystemPath{Name: "app", System: "x86_64-linux"}, fixture.SystemPath{Name: "lib"})
	srv := startServe(t, nil, "--from", "oci:"+layoutDir, "--registry")

	resp, err := http.Get(srv.URL + "/v2/app/manifests/latest")
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if resp.StatusCode != 200 || err != nil {
		t.Fatalf("the image to test with: %d %v", resp.StatusCode, err)
	}
	report := t.TempDir()
	skip := make([]string, len(distSpecSkipped))
	for i, s := range distSpecSkipped {
		skip[i] = regexpQuote(s)
	}
	cmd := exec.Command(suite, "-test.v", "-ginkgo.v", "-ginkgo.no-color", "-ginkgo.skip", strings.Join(skip, "|"))
	cmd.Dir = report
	cmd.Env = append(testenv.NixEnv(),
		"OCI_ROOT_URL="+srv.URL,
		"OCI_NAMESPACE=app",
		"OCI_TEST_PULL=1",
		"OCI_TEST_CONTENT_DISCOVERY=1",
		"OCI_TAG_NAME=latest",
		"OCI_TAG_LIST=latest",
		"OCI_MANIFEST_DIGEST="+resp.Header.Get("Docker-Content-Digest"),
		"OCI_BLOB_DIGEST="+m.Config.Digest.String(),
		"OCI_HIDE_SKIPPED_WORKFLOWS=1",
		"OCI_REPORT_DIR="+report,
	)
	stdout, stderr, err := testenv.RunCmdErr(cmd)
	if err != nil {
		t.Fatalf("the distribution-spec conformance suite failed: %v\n%s\n%s", err, tailLines(stdout, 60), tailLines(stderr, 20))
	}
	// The suite passes without running anything if its workflows are
	// off: make sure the specs ran.
	for _, want := range []string{"18 Passed", "HEAD request to manifest path (tag) should yield 200 response",
		"GET number of tags should be limitable by `n` query parameter", "GET request to nonexistent blob should result in empty 200 response"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the suite's output lacks %q:\n%s", want, tailLines(stdout, 40))
		}
	}
	t.Log(tailLines(stdout, 3))
}

// regexpQuote quotes s for Ginkgo's skip pattern.
func regexpQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
