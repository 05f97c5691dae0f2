package imageregistry

import (
	"encoding/json"
	"net/http"

	"github.com/nixoci/nixoci/internal/serving"
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
	status := serving.StatusOf(err)
	g.log.Error("backend failure", "what", what, "status", status, "err", err)
	registryError(w, status, codeUnknown, what+": backend failure")
}
