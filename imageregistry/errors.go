package imageregistry

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/nixoci/nixoci/image"
)

// distribution API error codes.
const (
	codeNameInvalid     = "NAME_INVALID"
	codeNameUnknown     = "NAME_UNKNOWN"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeUnsupported     = "UNSUPPORTED"
	codeUnknown         = "UNKNOWN"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeTooManyRequests = "TOOMANYREQUESTS"
)

// registryError writes an error in the distribution spec's JSON format.
func registryError(w http.ResponseWriter, status int, code, message string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": message}}})
}

func (g *Registry) fail(w http.ResponseWriter, what string, err error) {
	registryError(w, g.handler.Failed(what, err), codeUnknown, what+": backend failure")
}

// cannotCompose are the errors of a name whose closures make no image
// (a link root or entrypoint outside them, systems that do not fit): the
// client is told why, as NAME_INVALID, rather than of a backend failure.
var cannotCompose = []error{image.ErrOutsideClosure, image.ErrMixedSystems, image.ErrNoSystem, image.ErrNoPlatform}

func isCannotCompose(err error) bool {
	return slices.ContainsFunc(cannotCompose, func(target error) bool { return errors.Is(err, target) })
}
