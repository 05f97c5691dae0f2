package serving

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certCheckEvery is how often, at most, a handshake looks whether the
// certificate files changed: a renewed certificate (certbot,
// cert-manager rewriting a Secret's files) is served within it, without
// a restart, at the cost of two stat calls a second.
const certCheckEvery = time.Second

// CertFiles is a certificate and key read from PEM files, read again
// when either file changes. A pair that does not load (a renewal written
// half way, a key that does not match) is reported and the one loaded
// before is served on, so a bad renewal never takes the server down.
type CertFiles struct {
	certFile, keyFile string
	log               *slog.Logger
	every             time.Duration // certCheckEvery; tests set 0

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     [2]fileStamp // of the files cert was read from
	checked   time.Time
	badStamp  [2]fileStamp // of the files that last failed to load
	reloadErr error
}

// fileStamp is what tells a rewritten file from the one read before.
type fileStamp struct {
	mtime time.Time
	size  int64
}

// LoadCertFiles reads the pair once: an error here names the file and
// stops the server before it listens.
func LoadCertFiles(certFile, keyFile string, log *slog.Logger) (*CertFiles, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &CertFiles{certFile: certFile, keyFile: keyFile, log: log, every: certCheckEvery}
	stamp, err := c.stamps()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	c.cert, c.stamp, c.checked = &cert, stamp, time.Now()
	return c, nil
}

func (c *CertFiles) stamps() ([2]fileStamp, error) {
	var s [2]fileStamp
	for i, name := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return s, fmt.Errorf("TLS certificate: %w", err)
		}
		s[i] = fileStamp{mtime: fi.ModTime(), size: fi.Size()} // os.Stat follows the symlinks Kubernetes swaps
	}
	return s, nil
}

// GetCertificate is tls.Config.GetCertificate: the current pair.
func (c *CertFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.checked) >= c.every {
		c.checked = now
		c.reload()
	}
	return c.cert, nil
}

// reload reads the pair again if its files changed since it was read
// (or since a failed read of them).
func (c *CertFiles) reload() {
	stamp, err := c.stamps()
	if err == nil && (stamp == c.stamp || stamp == c.badStamp) {
		return
	}
	if err == nil {
		var cert tls.Certificate
		if cert, err = tls.LoadX509KeyPair(c.certFile, c.keyFile); err == nil {
			c.cert, c.stamp, c.badStamp, c.reloadErr = &cert, stamp, [2]fileStamp{}, nil
			c.log.Info("TLS certificate reloaded", "cert", c.certFile, "key", c.keyFile)
			return
		}
		c.badStamp = stamp
	}
	if c.reloadErr == nil || c.reloadErr.Error() != err.Error() {
		c.log.Warn("TLS certificate files changed but do not load; serving the one loaded before",
			"cert", c.certFile, "key", c.keyFile, "err", err)
	}
	c.reloadErr = err
}

// TLSConfig is the server's TLS configuration: TLS 1.2 at least, HTTP/2
// offered before HTTP/1.1 by ALPN (what curl, and so Nix, prefers over
// TLS), the certificate from c.
func (c *CertFiles) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: c.GetCertificate,
	}
}
