package codec

import (
	"bytes"
	"errors"
	"io"
	"runtime"

	"github.com/ulikunitz/xz"

	"github.com/nixoci/nixoci/spec"
)

// xzSlots bounds the xz chunks held in memory by all writers of the
// process (being filled or being compressed). Each can take several times
// spec.XzDictCap of memory, so the bound is the number of CPUs, which is
// also all the parallelism xz can use.
// xzChunkSize is spec.XzChunkSize; tests lower it to exercise chunking.
var xzChunkSize = spec.XzChunkSize

var xzSlots = make(chan struct{}, max(1, runtime.NumCPU()))

// xzWriter compresses fixed-size chunks of its input as independent xz
// streams, concurrently, and writes them to w in input order. Nix and xz
// read concatenated streams as one file, and since the chunk boundaries
// depend only on the input, so does the output.
type xzWriter struct {
	w       io.Writer
	buf     []byte     // chunk being filled; nil when holding no slot
	pending []*xzChunk // compressing or compressed, in input order
	err     error      // first error, sticky
	closed  bool
}

type xzChunk struct {
	done chan struct{}
	out  bytes.Buffer
	err  error
}

func newXzWriter(w io.Writer) *xzWriter { return &xzWriter{w: w} }

func (x *xzWriter) Write(p []byte) (int, error) {
	if x.err != nil {
		return 0, x.err
	}
	if x.closed {
		return 0, errors.New("codec: write to closed xz writer")
	}
	n := 0
	for len(p) > 0 {
		if x.buf == nil {
			if err := x.acquire(); err != nil {
				return n, err
			}
		}
		k := min(len(p), xzChunkSize-len(x.buf))
		x.buf = append(x.buf, p[:k]...)
		p, n = p[k:], n+k
		if len(x.buf) == xzChunkSize {
			x.submit()
		}
		if err := x.drain(false); err != nil {
			return n, err
		}
	}
	return n, nil
}

// acquire takes a slot for a new chunk. While no slot is free it writes
// out its own oldest chunk, which frees one, so writers never wait on
// each other in a cycle.
func (x *xzWriter) acquire() error {
	for {
		select {
		case xzSlots <- struct{}{}:
			x.buf = make([]byte, 0, xzChunkSize)
			return nil
		default:
		}
		if len(x.pending) == 0 {
			xzSlots <- struct{}{} // held only by other writers' progressing chunks
			x.buf = make([]byte, 0, xzChunkSize)
			return nil
		}
		if err := x.writeHead(); err != nil {
			return err
		}
	}
}

// submit starts compressing the filled chunk.
func (x *xzWriter) submit() {
	in := x.buf
	x.buf = nil
	c := &xzChunk{done: make(chan struct{})}
	x.pending = append(x.pending, c)
	go func() {
		defer close(c.done)
		c.out.Grow(len(in) / 3)
		dict := min(spec.XzDictCap, max(len(in), 4096))
		enc, err := xz.WriterConfig{DictCap: dict, CheckSum: xz.CRC64}.NewWriter(&c.out)
		if err == nil {
			_, err = enc.Write(in)
		}
		if err == nil {
			err = enc.Close()
		}
		c.err = err
	}()
}

// drain writes finished chunks at the head; with wait it waits for all.
func (x *xzWriter) drain(wait bool) error {
	for len(x.pending) > 0 {
		if !wait {
			select {
			case <-x.pending[0].done:
			default:
				return nil
			}
		}
		if err := x.writeHead(); err != nil {
			return err
		}
	}
	return nil
}

func (x *xzWriter) writeHead() error {
	c := x.pending[0]
	<-c.done
	x.pending = x.pending[1:]
	<-xzSlots
	if c.err != nil {
		x.err = c.err
		return c.err
	}
	if _, err := x.w.Write(c.out.Bytes()); err != nil {
		x.err = err
		return err
	}
	return nil
}

// Close compresses the last chunk and writes everything out. An empty
// input gives one empty xz stream. Close must be called even after an
// error: it releases the slots the writer holds.
func (x *xzWriter) Close() error {
	if x.closed {
		return x.err
	}
	x.closed = true
	if x.err == nil && x.buf == nil && len(x.pending) == 0 {
		x.err = x.acquire()
	}
	if x.err == nil && x.buf != nil {
		x.submit()
	}
	if x.err == nil {
		x.drain(true) // sets x.err
	}
	if x.buf != nil {
		x.buf = nil
		<-xzSlots
	}
	for _, c := range x.pending {
		<-c.done
		<-xzSlots
	}
	x.pending = nil
	return x.err
}
