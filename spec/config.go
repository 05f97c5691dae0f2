package spec

import ocispec "github.com/opencontainers/image-spec/specs-go/v1"

// EmptyConfig is the config of every artifact manifest nixoci writes
// (store paths, closures, layer records): the OCI empty descriptor without
// its inline data, so that manifests stay minimal and identical to what
// other tools write. Its content is EmptyConfigData.
var EmptyConfig = ocispec.Descriptor{
	MediaType: ocispec.MediaTypeEmptyJSON,
	Digest:    ocispec.DescriptorEmptyJSON.Digest,
	Size:      ocispec.DescriptorEmptyJSON.Size,
}

// EmptyConfigData is the content of EmptyConfig: "{}".
var EmptyConfigData = []byte("{}")

// EmptyLayers is the layers of a manifest that holds no content, only
// annotations (push records, gc markers, tombstones): the empty
// descriptor alone, as image-spec 1.1 asks of artifacts without layers
// ("layers SHOULD have at least one entry"), so that registries that
// insist on a layer accept them. Earlier writers wrote none
// (`"layers": []`); readers take both, reading only annotations.
func EmptyLayers() []ocispec.Descriptor { return []ocispec.Descriptor{EmptyConfig} }
