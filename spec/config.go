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
