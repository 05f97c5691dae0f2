package conformance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// Settings of the reliability tests (see RELIABILITY.md).
//
//	NIXOCI_RELIABILITY_LONG=1   many more runs, larger closures
//	NIXOCI_RELIABILITY_SEED=N   another seed for faults and kill delays

func relLong() bool { return os.Getenv("NIXOCI_RELIABILITY_LONG") == "1" }

// relSeed is NIXOCI_RELIABILITY_SEED, or def.
func relSeed(t testing.TB, def int64) int64 {
	if v := os.Getenv("NIXOCI_RELIABILITY_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("NIXOCI_RELIABILITY_SEED=%q: %v", v, err)
		}
		return n
	}
	return def
}

// relShort picks the short or the long value.
func relShort[T any](short, long T) T {
	if relLong() {
		return long
	}
	return short
}

// relStore reads what a push wrote, independently of nixoci: an image
// layout by its files, a registry repository over plain HTTP (bypassing
// any proxy). Positive results about blobs are cached by digest (blobs
// are immutable and nothing here deletes them).
type relStore interface {
	String() string
	// Tags lists the tags and (for a layout) the digests they name.
	Tags() (map[string]digest.Digest, error)
	// Manifest fetches a manifest by tag or digest, verified against
	// its digest.
	Manifest(ref string) (digest.Digest, []byte, error)
	// Blob checks that a blob is stored with this size; with read it
	// returns its content, verified against the digest.
	Blob(d digest.Digest, size int64, read bool) ([]byte, error)
}

// layoutStore is an image-layout directory.
type layoutStore struct{ dir string }

func (s layoutStore) String() string { return "oci:" + s.dir }

func (s layoutStore) Tags() (map[string]digest.Digest, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, "index.json"))
	if err != nil {
		return nil, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("index.json is not valid JSON (%d bytes): %w", len(data), err)
	}
	if idx.SchemaVersion != 2 {
		return nil, fmt.Errorf("index.json: schemaVersion %d", idx.SchemaVersion)
	}
	tags := map[string]digest.Digest{}
	for _, m := range idx.Manifests {
		if name, ok := m.Annotations[ocispec.AnnotationRefName]; ok {
			if _, dup := tags[name]; dup {
				return nil, fmt.Errorf("index.json names tag %s twice", name)
			}
			tags[name] = m.Digest
		}
	}
	return tags, nil
}

func (s layoutStore) Manifest(ref string) (digest.Digest, []byte, error) {
	d, err := digest.Parse(ref)
	if err != nil {
		tags, err := s.Tags()
		if err != nil {
			return "", nil, err
		}
		var ok bool
		if d, ok = tags[ref]; !ok {
			return "", nil, fmt.Errorf("tag %s: not in index.json", ref)
		}
	}
	data, err := s.Blob(d, -1, true)
	return d, data, err
}

func (s layoutStore) Blob(d digest.Digest, size int64, read bool) ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	p := filepath.Join(s.dir, "blobs", d.Algorithm().String(), d.Encoded())
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	if size >= 0 && int64(len(data)) != size {
		return nil, fmt.Errorf("blob %s: %d bytes, descriptor says %d", d, len(data), size)
	}
	if digest.FromBytes(data) != d {
		return nil, fmt.Errorf("blob %s: content does not match its digest (partly written?)", d)
	}
	return data, nil
}

// registryStore is one repository of a registry, read over plain HTTP.
type registryStore struct {
	base, repo string // http://host:port, repository name
	client     *http.Client

	mu    sync.Mutex
	blobs map[digest.Digest][]byte // verified blobs (nil content: only HEAD)
}

func newRegistryStore(reg *testenv.Registry, repo string) *registryStore {
	return &registryStore{base: reg.URL(), repo: repo, client: &http.Client{Timeout: 30 * time.Second},
		blobs: map[digest.Digest][]byte{}}
}

func (s *registryStore) String() string { return strings.TrimPrefix(s.base, "http://") + "/" + s.repo }

func (s *registryStore) get(method, path string, accept ...string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, s.base+"/v2/"+s.repo+path, nil)
	if err != nil {
		return nil, nil, err
	}
	for _, a := range accept {
		req.Header.Add("Accept", a)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func (s *registryStore) Tags() (map[string]digest.Digest, error) {
	resp, body, err := s.get("GET", "/tags/list")
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		return map[string]digest.Digest{}, nil // no such repository yet
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET tags/list: %s: %s", resp.Status, body)
	}
	var list struct {
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, err
	}
	// The digests are left empty: relWalk resolves each tag.
	tags := map[string]digest.Digest{}
	for _, tag := range list.Tags {
		tags[tag] = ""
	}
	return tags, nil
}

// tagSettle bounds how long a listed tag may stay unresolvable. A client
// killed right after sending a manifest PUT leaves the registry writing
// the tag: distribution lists a tag once its directory exists, before
// its link file is written, so GET answers 404 for a moment. A tag that
// never resolves is an error.
const tagSettle = 10 * time.Second

func (s *registryStore) Manifest(ref string) (digest.Digest, []byte, error) {
	var resp *http.Response
	var body []byte
	var err error
	_, perr := digest.Parse(ref)
	isTag := perr != nil
	for deadline := time.Now().Add(tagSettle); ; time.Sleep(50 * time.Millisecond) {
		resp, body, err = s.get("GET", "/manifests/"+ref, ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex)
		if err != nil {
			return "", nil, err
		}
		if resp.StatusCode != http.StatusNotFound || !isTag || time.Now().After(deadline) {
			break
		}
	}
	if resp.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("GET manifest %s: %s: %s", ref, resp.Status, bytes.TrimSpace(body))
	}
	d := digest.FromBytes(body)
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" && h != d.String() {
		return "", nil, fmt.Errorf("manifest %s: body hashes to %s, header says %s", ref, d, h)
	}
	if pd, err := digest.Parse(ref); err == nil && pd != d {
		return "", nil, fmt.Errorf("manifest %s: body hashes to %s", ref, d)
	}
	return d, body, nil
}

func (s *registryStore) Blob(d digest.Digest, size int64, read bool) ([]byte, error) {
	s.mu.Lock()
	data, ok := s.blobs[d]
	s.mu.Unlock()
	if ok && (!read || data != nil) {
		return data, nil
	}
	method := "HEAD"
	if read {
		method = "GET"
	}
	resp, body, err := s.get(method, "/blobs/"+d.String())
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s blob %s: %s", method, d, resp.Status)
	}
	if size >= 0 && resp.ContentLength != size {
		return nil, fmt.Errorf("blob %s: %d bytes, descriptor says %d", d, resp.ContentLength, size)
	}
	if read {
		if digest.FromBytes(body) != d {
			return nil, fmt.Errorf("blob %s: content does not match its digest", d)
		}
		data = body
	}
	s.mu.Lock()
	s.blobs[d] = data
	s.mu.Unlock()
	return data, nil
}

// walked is what relWalk found behind one tag.
type walked struct {
	Digest       digest.Digest
	ArtifactType string
	Annotations  map[string]string
	Layers       []ocispec.Descriptor // of every part, in order
	Blobs        int                  // blobs checked (config and layers)
}

// relWalk fetches what ref names and checks every blob it references is
// stored with its size, following indexes (split closures, version 2
// closures and their parts) down to their manifests.
func relWalk(s relStore, ref string) (*walked, error) {
	d, data, err := s.Manifest(ref)
	if err != nil {
		return nil, err
	}
	var top struct {
		ArtifactType string            `json:"artifactType"`
		Annotations  map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w", ref, d, err)
	}
	w := &walked{Digest: d, ArtifactType: top.ArtifactType, Annotations: top.Annotations}
	return w, relWalkInto(s, ref, data, w, 0)
}

func relWalkInto(s relStore, ref string, data []byte, w *walked, depth int) error {
	var m struct {
		MediaType string               `json:"mediaType"`
		Config    ocispec.Descriptor   `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	if m.MediaType == ocispec.MediaTypeImageIndex {
		if depth > 3 {
			return fmt.Errorf("%s: indexes nested too deep", ref)
		}
		for _, c := range m.Manifests {
			_, child, err := s.Manifest(c.Digest.String())
			if err != nil {
				return fmt.Errorf("%s: %s: %w", ref, c.Digest, err)
			}
			if err := relWalkInto(s, ref, child, w, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	for _, b := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		if _, err := s.Blob(b.Digest, b.Size, false); err != nil {
			return fmt.Errorf("%s: %w", ref, err)
		}
		w.Blobs++
	}
	w.Layers = append(w.Layers, m.Layers...)
	return nil
}

// relCheckPath checks that tag names the complete artifact of the store
// path whose hash part it is.
func relCheckPath(s relStore, tag string) error {
	w, err := relWalk(s, tag)
	if err != nil {
		return err
	}
	if w.ArtifactType != spec.ArtifactTypePath {
		return fmt.Errorf("tag %s: artifactType %q", tag, w.ArtifactType)
	}
	sp := w.Annotations[spec.AnnotationStorePath]
	if spec.PathTag(sp) != tag {
		return fmt.Errorf("tag %s holds %s", tag, sp)
	}
	if len(w.Layers) != 2 || w.Layers[1].MediaType != spec.MediaTypeNarInfo {
		return fmt.Errorf("tag %s: want a NAR and a narinfo layer, got %d layers", tag, len(w.Layers))
	}
	data, err := s.Blob(w.Layers[1].Digest, w.Layers[1].Size, true)
	if err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	info, err := narinfo.Parse(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("tag %s: narinfo: %w", tag, err)
	}
	if info.StorePath != sp || info.URL != w.Layers[0].Annotations[spec.AnnotationTitle] {
		return fmt.Errorf("tag %s: narinfo for %s with URL %s, manifest says %s and %s", tag, info.StorePath, info.URL, sp, w.Layers[0].Annotations[spec.AnnotationTitle])
	}
	return nil
}

// relCheckClosure checks that tag names a complete closure of want store
// paths (any number if want is 0): every narinfo's NAR and references are
// in it, and nix-cache-info too.
func relCheckClosure(s relStore, tag string, want int) (*walked, error) {
	w, err := relWalk(s, tag)
	if err != nil {
		return nil, err
	}
	if w.ArtifactType != spec.ArtifactTypeClosure && w.ArtifactType != spec.ArtifactTypeClosureV2 {
		return nil, fmt.Errorf("tag %s: artifactType %q, want a closure", tag, w.ArtifactType)
	}
	titles := map[string]bool{}
	for _, l := range w.Layers {
		titles[l.Annotations[spec.AnnotationTitle]] = true
	}
	var infoLayers []ocispec.Descriptor
	for _, l := range w.Layers {
		if l.MediaType == spec.MediaTypeNarInfo {
			infoLayers = append(infoLayers, l)
		}
	}
	datas, err := readBlobs(s, infoLayers)
	if err != nil {
		return nil, fmt.Errorf("closure %s: %w", tag, err)
	}
	var infos []*narinfo.NarInfo
	paths := map[string]bool{}
	for i, l := range infoLayers {
		info, err := narinfo.Parse(bytes.NewReader(datas[i]))
		if err != nil {
			return nil, fmt.Errorf("closure %s: narinfo %s: %w", tag, l.Digest, err)
		}
		infos = append(infos, info)
		paths[info.StorePath] = true
	}
	if n := w.Annotations[spec.AnnotationPathCount]; n != strconv.Itoa(len(paths)) {
		return nil, fmt.Errorf("closure %s: %d narinfos, path-count says %s", tag, len(paths), n)
	}
	if want > 0 && len(paths) != want {
		return nil, fmt.Errorf("closure %s: %d store paths, want %d", tag, len(paths), want)
	}
	if !titles["nix-cache-info"] {
		return nil, fmt.Errorf("closure %s: no nix-cache-info layer", tag)
	}
	for _, info := range infos {
		if !titles[info.URL] {
			return nil, fmt.Errorf("closure %s: %s: NAR %s is not a layer", tag, info.StorePath, info.URL)
		}
		for _, r := range info.References {
			if !paths[info.StoreDir()+"/"+r] {
				return nil, fmt.Errorf("closure %s: %s references %s, which is not in the closure", tag, info.StorePath, r)
			}
		}
	}
	return w, nil
}

// readBlobs reads blobs, 8 at a time.
func readBlobs(s relStore, descs []ocispec.Descriptor) ([][]byte, error) {
	out := make([][]byte, len(descs))
	errs := make([]error, len(descs))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, d := range descs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i], errs[i] = s.Blob(d.Digest, d.Size, true)
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// relCheckAll checks every tag of s: path tags name complete path
// artifacts, other tags complete closures. It returns the tags.
func relCheckAll(t testing.TB, s relStore) map[string]digest.Digest {
	t.Helper()
	tags, err := s.Tags()
	if err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	names := make([]string, 0, len(tags))
	for tag := range tags {
		names = append(names, tag)
	}
	sort.Strings(names)
	work := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tag := range work {
				var err error
				switch {
				case len(tag) == 32 && spec.ValidTag(tag) && !strings.ContainsAny(tag, "-_."):
					err = relCheckPath(s, tag)
				case strings.HasPrefix(tag, "sha256-"):
					_, err = relWalk(s, tag) // a referrers index: complete too
				default:
					_, err = relCheckClosure(s, tag, 0)
				}
				if err != nil {
					t.Errorf("%s: %v", s, err)
				}
			}
		}()
	}
	for _, tag := range names {
		work <- tag
	}
	close(work)
	wg.Wait()
	return tags
}

// relCheckLayoutTools checks that the real umoci and oras read the
// layout and list the same tags as its index.json.
func relCheckLayoutTools(t testing.TB, dir string, tags map[string]digest.Digest) {
	t.Helper()
	var want []string
	for tag := range tags {
		want = append(want, tag)
	}
	sort.Strings(want)
	for _, tool := range [][]string{{"umoci", "ls", "--layout", dir}, {"oras", "repo", "tags", "--oci-layout", dir}} {
		out, stderr, err := testenv.RunErr(t, tool[0], tool[1:]...)
		if err != nil {
			t.Errorf("%s cannot read the layout: %v\n%s", strings.Join(tool, " "), err, stderr)
			continue
		}
		got := strings.Fields(out)
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s lists %d tags, index.json has %d", strings.Join(tool, " "), len(got), len(want))
		}
	}
}

// fileID identifies one version of a file. A layout writes a blob to a
// temporary file and renames it, so a rewrite gives a new inode; the
// modification time is not part of the identity, since storing a blob
// that is already there renews it on purpose (SPEC.md 10.2).
type fileID struct {
	ino  uint64
	size int64
}

// layoutBlobFiles snapshots the files under blobs/ of a layout.
func layoutBlobFiles(t testing.TB, dir string) map[string]fileID {
	t.Helper()
	m := map[string]fileID{}
	root := filepath.Join(dir, "blobs")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		m[p] = fileID{ino: st.Ino, size: fi.Size()}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return m
}

// registryRepoBlobs lists the blob digests linked into a repository, read
// from the registry's storage directory.
func registryRepoBlobs(t testing.TB, reg *testenv.Registry, repo string) map[string]bool {
	t.Helper()
	m := map[string]bool{}
	links, err := filepath.Glob(filepath.Join(reg.Dir, "docker/registry/v2/repositories", repo, "_layers/sha256/*/link"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		m["sha256:"+filepath.Base(filepath.Dir(l))] = true
	}
	return m
}

// blobUploadsOf counts the blob upload requests in log (POSTs opening a
// session and the PUTs completing one) for digests in set. A POST is
// attributed through the session URL it handed out.
func blobUploadsOf(log []testenv.ProxyRequest, set map[string]bool) (puts, posts int) {
	sessionDigest := map[string]string{}
	for _, r := range log {
		if r.Method == http.MethodPut && strings.Contains(r.Path, "/blobs/uploads/") {
			sessionDigest[r.Path] = r.Digest()
			if set[r.Digest()] {
				puts++
			}
		}
	}
	for _, r := range log {
		if r.Method != http.MethodPost || !strings.Contains(r.Path, "/blobs/uploads/") {
			continue
		}
		d := r.Digest()
		if d == "" {
			loc := r.Location
			if i := strings.Index(loc, "/v2/"); i >= 0 {
				loc = loc[i:]
			}
			if i := strings.IndexByte(loc, '?'); i >= 0 {
				loc = loc[:i]
			}
			d = sessionDigest[loc]
		}
		if set[d] {
			posts++
		}
	}
	return puts, posts
}

// relSharedClosures adds n overlapping closures to c: every closure has
// its own root, mids and leaves, a mid shared by all, and references
// into one pool of shared leaves. It returns the roots, the size of each
// closure and the hash parts of all their paths (shared leaves no
// closure references are left out).
func relSharedClosures(c *synthCache, prefix string, n, mids, ownLeaves, sharedPerMid, pool int) ([]string, []int, []string) {
	shared := make([]string, pool)
	for j := range shared {
		p := synthStorePath(fmt.Sprintf("%s-shared-leaf-%d", prefix, j))
		c.add(p, fileNAR(c.t, p), nil, nil)
		shared[j] = filepath.Base(p)
	}
	common := synthStorePath(prefix + "-common-mid")
	c.add(common, fileNAR(c.t, common), shared[:min(4, pool)], nil)
	var roots []string
	var sizes []int
	union := map[string]bool{}
	for k := range n {
		inClosure := map[string]bool{filepath.Base(common): true}
		for _, s := range shared[:min(4, pool)] {
			inClosure[s] = true
		}
		rootRefs := []string{filepath.Base(common)}
		for i := range mids {
			var refs []string
			for j := range ownLeaves {
				p := synthStorePath(fmt.Sprintf("%s-%d-leaf-%d-%d", prefix, k, i, j))
				c.add(p, fileNAR(c.t, p), nil, nil)
				refs = append(refs, filepath.Base(p))
				inClosure[filepath.Base(p)] = true
			}
			for j := range sharedPerMid {
				s := shared[(k*7+i*3+j)%pool]
				if !slices.Contains(refs, s) {
					refs = append(refs, s)
				}
				inClosure[s] = true
			}
			sort.Strings(refs)
			m := synthStorePath(fmt.Sprintf("%s-%d-mid-%d", prefix, k, i))
			c.add(m, fileNAR(c.t, m), refs, nil)
			rootRefs = append(rootRefs, filepath.Base(m))
			inClosure[filepath.Base(m)] = true
		}
		sort.Strings(rootRefs)
		root := synthStorePath(fmt.Sprintf("%s-%d-root", prefix, k))
		c.add(root, fileNAR(c.t, root), rootRefs, nil)
		roots = append(roots, root)
		sizes = append(sizes, len(inClosure)+1)
		union[spec.PathTag(root)] = true
		for base := range inClosure {
			union[spec.PathTag("/nix/store/"+base)] = true
		}
	}
	hashes := make([]string, 0, len(union))
	for h := range union {
		hashes = append(hashes, h)
	}
	sort.Strings(hashes)
	return roots, sizes, hashes
}

// killablePush is a `nixoci push` started in the background.
type killablePush struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan error // the exit, once
	start, end     time.Time  // end is set before done receives
}

func startPush(t testing.TB, env []string, args ...string) *killablePush {
	t.Helper()
	return startNixoci(t, env, append([]string{"push"}, args...)...)
}

// startNixoci starts any nixoci command in the background.
func startNixoci(t testing.TB, env []string, args ...string) *killablePush {
	t.Helper()
	p := &killablePush{cmd: nixoci(t, args...), done: make(chan error, 1)}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		p.end = time.Now()
		p.done <- err
	}()
	return p
}

// killAfter sends SIGKILL after d unless the push has finished; it
// reports whether the kill interrupted it, and the push's error if not.
func (p *killablePush) killAfter(d time.Duration) (killed bool, err error) {
	select {
	case err := <-p.done:
		return false, err
	case <-time.After(time.Until(p.start.Add(d))):
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	err = <-p.done
	return true, err
}

// wait waits for the push and returns its error, with its stderr.
func (p *killablePush) wait() error {
	if err := <-p.done; err != nil {
		return fmt.Errorf("%s: %v\n%s", testenv.CommandLine(p.cmd.Args), err, p.stderr.String())
	}
	return nil
}
