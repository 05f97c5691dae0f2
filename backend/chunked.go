package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// DefaultChunkSize is the size of the chunks a blob larger than it is
// uploaded in: below the request body limits of the proxies registries
// commonly sit behind (nginx set-ups of 10 or 16 MiB, Cloud Run 32 MB,
// Cloudflare 100 MB), and large enough that a chunk's round trip costs
// little next to its transfer (BENCHMARKS.md). nginx's own default of
// 1 MiB needs --chunk-size 1MiB or less.
const DefaultChunkSize = 8 << 20

// How a cut chunk is resumed: at most maxResumes attempts in a row
// without progress, waiting resumeWait, doubled each time. A blob read
// from a file is sent again from its start at most maxRestarts times
// when its session is lost.
const (
	maxResumes  = 5
	resumeWait  = 250 * time.Millisecond
	maxRestarts = 2
)

// errSessionLost: the registry no longer has the upload session in the
// state it was left in; the blob must be sent again from its start.
var errSessionLost = errors.New("upload session lost")

// errChunksRefused: the registry (or a proxy) answered the first chunk
// as if it does not take uploads in chunks.
var errChunksRefused = errors.New("registry does not accept uploads in chunks")

// errBadAnswer: the registry's answer breaks the upload protocol; asking
// it again will not help.
var errBadAnswer = errors.New("registry answered out of protocol")

// manifestMediaTypes are pushed as manifests, never in chunks.
var manifestMediaTypes = []string{
	ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}

// push stores desc: a blob larger than the chunk size in chunks, other
// blobs and manifests in one request, as oras-go does.
func (r *remoteTarget) push(ctx context.Context, desc ocispec.Descriptor, content io.Reader) error {
	if r.chunkSize < 0 || desc.Size <= r.chunkSize || slices.Contains(manifestMediaTypes, desc.MediaType) {
		return uploadError(r.Repository.Push(ctx, desc, content))
	}
	u := &chunkedUpload{r: r, desc: desc}
	return uploadError(u.run(ctx, content))
}

// chunkedUpload is one blob upload in chunks, as the distribution spec
// describes (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-a-blob-in-chunks):
// POST opens a session, each PATCH sends the next chunk with its
// Content-Range, PUT with the digest closes it. A chunk whose request
// fails is resumed from the offset the registry reports for the session
// (GET on its URL), not sent again from the start, and never resent
// blindly by a lower layer (its request has no GetBody). Only when the
// registry has lost the session (or cannot go on with it) is the blob
// sent again from its start in a new one: here, if it is read from a
// file (an io.Seeker), else by the caller (the error is transient).
//
// Requests go through the target's auth.Client with the push scope, so
// tokens are fetched and refreshed as for any other request.
type chunkedUpload struct {
	r        *remoteTarget
	desc     ocispec.Descriptor
	base     *url.URL // POST URL of the repository's uploads
	location *url.URL // the session's URL, as last given by the registry
	offset   int64    // bytes of the blob the registry holds
}

func (u *chunkedUpload) run(ctx context.Context, content io.Reader) error {
	ref := u.r.Repository.Reference
	ctx = auth.AppendRepositoryScope(ctx, ref, auth.ActionPull, auth.ActionPush)
	scheme := "https"
	if u.r.Repository.PlainHTTP {
		scheme = "http"
	}
	u.base = &url.URL{Scheme: scheme, Host: ref.Host(), Path: "/v2/" + ref.Repository + "/blobs/uploads/"}
	seeker, _ := content.(io.Seeker)
	var origin int64
	if seeker != nil {
		var err error
		if origin, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			seeker = nil
		}
	}
	buf := make([]byte, min(u.r.chunkSize, u.desc.Size))
	for restarts := 0; ; restarts++ {
		err := u.upload(ctx, content, buf)
		if !errors.Is(err, errSessionLost) || seeker == nil || restarts == maxRestarts {
			return err // a lost session of a stream is the caller's to start over
		}
		slog.Warn("blob upload session lost; sending the blob again from its start",
			"target", u.r.name, "digest", u.desc.Digest, "err", err)
		if _, err := seeker.Seek(origin, io.SeekStart); err != nil {
			return err
		}
	}
}

// upload sends the blob from content (at its start) in a new session.
func (u *chunkedUpload) upload(ctx context.Context, content io.Reader, buf []byte) error {
	u.location, u.offset = nil, 0
	if err := u.start(ctx); err != nil {
		return err
	}
	for u.offset < u.desc.Size {
		chunk := buf[:min(int64(len(buf)), u.desc.Size-u.offset)]
		if _, err := io.ReadFull(content, chunk); err != nil {
			// %v: a short or failing source is not a failed connection
			// (classify would take io.ErrUnexpectedEOF for one).
			return fmt.Errorf("reading %s at byte %d of %d: %v", u.desc.Digest, u.offset, u.desc.Size, err)
		}
		err := u.send(ctx, chunk)
		if errors.Is(err, errChunksRefused) {
			return u.pushWhole(ctx, chunk, content, err)
		}
		if err != nil {
			return err
		}
	}
	return u.finish(ctx)
}

// start opens the upload session.
func (u *chunkedUpload) start(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.base.String(), nil)
	if err != nil {
		return err
	}
	return u.exchange(req, 0, http.StatusAccepted)
}

// send uploads chunk, which starts at u.offset, resuming it after
// failures the registry may recover from.
func (u *chunkedUpload) send(ctx context.Context, chunk []byte) error {
	start, end := u.offset, u.offset+int64(len(chunk))
	failures := 0
	for u.offset < end {
		before := u.offset
		err := u.patch(ctx, chunk[u.offset-start:])
		if err == nil && u.offset > end {
			return fmt.Errorf("%s: registry reports %d bytes of the blob after a chunk ending at byte %d: %w", u.desc.Digest, u.offset, end-1, errBadAnswer)
		}
		if err == nil && u.offset > before {
			failures = 0
			continue
		}
		if err == nil {
			err = fmt.Errorf("%s: registry took none of the chunk at byte %d", u.desc.Digest, before)
		}
		if before == 0 && refusesChunks(err) {
			return fmt.Errorf("%w: %w", errChunksRefused, err)
		}
		if !resumable(ctx, err) {
			return err
		}
		if err := u.resume(ctx, err, &failures); err != nil {
			return err
		}
		if u.offset < start || u.offset > end {
			return fmt.Errorf("%w: registry reports %d bytes of %s while bytes %d-%d were sent: %w",
				errSessionLost, u.offset, u.desc.Digest, start, end-1, ErrRegistry)
		}
	}
	return nil
}

// resume waits, then asks the registry how much of the blob it holds,
// until it answers or failures reaches maxResumes. cause is the failure
// that interrupted the upload.
func (u *chunkedUpload) resume(ctx context.Context, cause error, failures *int) error {
	for {
		if *failures == maxResumes {
			return fmt.Errorf("upload interrupted %d times at byte %d: %w", maxResumes, u.offset, cause)
		}
		*failures++
		slog.Warn("blob upload interrupted; resuming from what the registry holds",
			"target", u.r.name, "digest", u.desc.Digest, "at", u.offset, "err", cause)
		timer := time.NewTimer(resumeWait << (*failures - 1))
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		err := u.status(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if !resumable(ctx, err) || hasStatus(err, http.StatusRequestedRangeNotSatisfiable) {
			// The registry answers, but not with the session's state: it
			// is gone (expired, or cancelled by a registry that cannot
			// go on after a cut chunk, as docker-registry 2.8), or
			// refused (distribution v3, which then holds other bytes
			// than its state token says).
			return fmt.Errorf("%w at byte %d: %w: %w", errSessionLost, u.offset, ErrRegistry, err)
		}
		cause = err
	}
}

// patch sends data as the next chunk.
func (u *chunkedUpload) patch(ctx context.Context, data []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, u.location.String(), bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.GetBody = nil // see chunkedUpload
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", u.offset, u.offset+int64(len(data))-1))
	return u.exchange(req, u.offset+int64(len(data)), http.StatusAccepted)
}

// status asks the registry how much of the blob it holds.
func (u *chunkedUpload) status(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.location.String(), nil)
	if err != nil {
		return err
	}
	return u.exchange(req, 0, http.StatusNoContent, http.StatusOK)
}

// finish closes the session with the blob's digest. A failure after
// which the registry has the blob anyway (the answer was lost) is none.
func (u *chunkedUpload) finish(ctx context.Context) error {
	err := u.put(ctx, nil, 0)
	if err != nil && resumable(ctx, err) {
		if _, rerr := u.r.Repository.Blobs().Resolve(ctx, u.desc.Digest.String()); rerr == nil {
			return nil
		}
	}
	return err
}

// pushWhole sends the blob in one request to a registry that refused
// its first chunk: first, then the rest of content.
func (u *chunkedUpload) pushWhole(ctx context.Context, first []byte, rest io.Reader, refusal error) error {
	slog.Warn("registry refused an upload in chunks; sending the blob in one request",
		"target", u.r.name, "digest", u.desc.Digest, "size", u.desc.Size, "answer", refusal)
	err := u.put(ctx, io.MultiReader(bytes.NewReader(first), rest), u.desc.Size)
	if err == nil {
		return nil
	}
	var resp *errcode.ErrorResponse
	if hasStatus(err, http.StatusRequestEntityTooLarge) && errors.As(err, &resp) {
		err = resp // chunks are refused: smaller ones would not help
	}
	return fmt.Errorf("%w; in one request instead: %w", refusal, err)
}

// put closes the session with the digest, sending body (size bytes).
func (u *chunkedUpload) put(ctx context.Context, body io.Reader, size int64) error {
	loc := *u.location
	q := loc.Query()
	q.Set("digest", u.desc.Digest.String())
	loc.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.GetBody = nil
	req.Header.Set("Content-Type", "application/octet-stream")
	return u.exchange(req, -1, http.StatusCreated)
}

// exchange sends one request of the session and, unless the registry
// answers with one of want, returns the answer's error. For an answer
// that goes on with the session (next >= 0), it takes the session URL
// and offset from it (follow; next is the offset without a Range).
func (u *chunkedUpload) exchange(req *http.Request, next int64, want ...int) error {
	resp, err := u.r.Repository.Client.Do(req)
	if err != nil {
		return uploadError(err)
	}
	defer resp.Body.Close()
	if !slices.Contains(want, resp.StatusCode) {
		return answerError(resp)
	}
	if next < 0 {
		return nil // the session is closed
	}
	return u.follow(resp, next)
}

// follow takes the session URL (Location) and the offset (Range) from a
// registry's answer; without a Range header the offset is dflt.
func (u *chunkedUpload) follow(resp *http.Response, dflt int64) error {
	req := resp.Request
	if loc := resp.Header.Get("Location"); loc != "" {
		l, err := req.URL.Parse(loc)
		if err != nil {
			return fmt.Errorf("%s %s: bad Location %q: %w: %w", req.Method, redactURL(req.URL), loc, errBadAnswer, err)
		}
		// As oras-go: credentials go to the registry's host only, and
		// never over plain HTTP when the registry speaks HTTPS.
		if !sameHost(l, u.base) || u.base.Scheme == "https" && l.Scheme != "https" {
			return fmt.Errorf("%s %s: upload Location %s is not on the registry %s: %w", req.Method, redactURL(req.URL), redactURL(l), u.base.Host, errBadAnswer)
		}
		u.location = l
	} else if u.location == nil {
		return fmt.Errorf("%s %s: answered %s without a Location: %w", req.Method, redactURL(req.URL), resp.Status, errBadAnswer)
	}
	u.offset = dflt
	if r := resp.Header.Get("Range"); r != "" {
		last, ok := parseRangeEnd(r)
		if !ok {
			return fmt.Errorf("%s %s: bad Range %q: %w", req.Method, redactURL(req.URL), r, errBadAnswer)
		}
		// "0-0" is what distribution says for no bytes as well as one.
		u.offset = last + 1
		if last == 0 {
			u.offset = min(dflt, 1)
		}
	}
	return nil
}

// parseRangeEnd reads the last byte of a "0-LAST" (or "bytes=0-LAST")
// Range header.
func parseRangeEnd(s string) (int64, bool) {
	first, last, ok := strings.Cut(strings.TrimPrefix(s, "bytes="), "-")
	if !ok || first != "0" {
		return 0, false
	}
	n, err := strconv.ParseInt(last, 10, 64)
	return n, err == nil && n >= 0
}

// sameHost compares hosts, with default ports made explicit.
func sameHost(a, b *url.URL) bool {
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if u.Scheme == "https" {
			return "443"
		}
		return "80"
	}
	return strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

// hasStatus reports whether err is a registry's answer with this status.
func hasStatus(err error, status int) bool {
	var resp *errcode.ErrorResponse
	return errors.As(err, &resp) && resp.StatusCode == status
}

// refusesChunks reports whether the answer to a first chunk says chunks
// are not supported, rather than that this chunk failed.
func refusesChunks(err error) bool {
	var resp *errcode.ErrorResponse
	if !errors.As(err, &resp) {
		return false
	}
	switch resp.StatusCode {
	case http.StatusMethodNotAllowed, http.StatusNotImplemented, http.StatusLengthRequired, http.StatusRequestedRangeNotSatisfiable:
		return true
	case http.StatusNotFound:
		return !hasCode(resp.Errors, errcode.ErrorCodeBlobUploadUnknown)
	case http.StatusBadRequest:
		return hasCode(resp.Errors, errcode.ErrorCodeUnsupported)
	}
	return false
}

// resumable reports whether, after err, asking the registry where the
// upload stands may let it go on: failures of the connection or of the
// registry's side, and disagreement about the offset.
func resumable(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, errBadAnswer) {
		return false
	}
	var resp *errcode.ErrorResponse
	if !errors.As(err, &resp) {
		return true // a connection failure, or a body the auth client could not send again
	}
	switch code := resp.StatusCode; {
	case code >= 500, code == http.StatusTooManyRequests, code == http.StatusRequestTimeout,
		code == http.StatusRequestedRangeNotSatisfiable:
		return true
	}
	return false
}
