package backend

import "runtime"

// DefaultJobs is how many store paths, blobs or layers nixoci handles at
// once when not told (push, pull, inspect, image, walking a binary
// cache): max(4, CPUs), so that a few requests are always in flight to
// hide a registry's latency and every CPU can compress. It never changes
// what is written.
func DefaultJobs() int { return max(4, runtime.NumCPU()) }

// DefaultJobsText describes DefaultJobs in help texts.
const DefaultJobsText = "max(4, CPUs)"
