package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NginxOptions configure StartNginxProxy.
type NginxOptions struct {
	// MaxBodySize is nginx's client_max_body_size, e.g. "16m"; empty
	// keeps nginx's default (1m). Larger request bodies get a 413.
	MaxBodySize string
	// RefusePatch answers every PATCH with 405, as proxies and firewalls
	// that pass only GET, HEAD, POST, PUT and DELETE do.
	RefusePatch bool
}

// NginxProxy is a real nginx (Debian's nginx-light) on 127.0.0.1 as a
// reverse proxy in front of a registry, keeping the client's Host header
// so that the registry's upload Locations point back at it. Request
// bodies are buffered by nginx before they are passed on, as its default
// is; responses are streamed.
type NginxProxy struct {
	Addr      string // "127.0.0.1:PORT"
	Upstream  string // host:port of the registry
	Dir       string // configuration, logs and temp files
	AccessLog string // "METHOD URI STATUS REQUEST_LENGTH" per request
}

// NginxRequest is one line of NginxProxy.AccessLog.
type NginxRequest struct {
	Method string
	URI    string
	Status int
	// Length is the size of the request as received: line, headers and
	// the body read (all of it when passed on).
	Length int64
}

// StartNginxProxy starts nginx as a proxy for upstream ("host:port",
// spoken to over plain HTTP) on a free 127.0.0.1 port (another one if the
// port is taken before nginx binds it, see StartOnFreePort) and waits
// until it passes GET /v2/ on. nginx runs in the foreground as one
// process (master_process off), as root (user root: the temp dirs are the
// test's); t.Cleanup stops it and, if the test failed, logs its error log.
func StartNginxProxy(t testing.TB, upstream string, opts NginxOptions) *NginxProxy {
	t.Helper()
	dir := t.TempDir()
	p := &NginxProxy{Upstream: upstream, Dir: dir, AccessLog: filepath.Join(dir, "access.log")}
	p.Addr = startNginx(t, dir, "/v2/", "proxy for "+upstream, func(addr, errorLog string) string {
		p.Addr = addr
		return nginxConfig(p, errorLog, opts)
	})
	return p
}

// NginxStatic is a real nginx serving a directory's files, as object
// storage behind a registry's redirects would.
type NginxStatic struct {
	Addr      string // "127.0.0.1:PORT"
	Root      string
	AccessLog string // "METHOD URI STATUS REQUEST_LENGTH" per request
}

// StartNginxStatic starts nginx serving the files under root on a free
// 127.0.0.1 port, as StartNginxProxy does, and waits until it answers.
func StartNginxStatic(t testing.TB, root string) *NginxStatic {
	t.Helper()
	return startNginxStatic(t, root, "")
}

// StartNginxStaticAuth is StartNginxStatic asking for HTTP Basic
// credentials from htpasswd (a file `htpasswd -B` wrote) for every file.
func StartNginxStaticAuth(t testing.TB, root, htpasswd string) *NginxStatic {
	t.Helper()
	return startNginxStatic(t, root, htpasswd)
}

func startNginxStatic(t testing.TB, root, htpasswd string) *NginxStatic {
	t.Helper()
	auth := ""
	if htpasswd != "" {
		auth = fmt.Sprintf("        auth_basic \"nixoci test\";\n        auth_basic_user_file %s;\n", htpasswd)
	}
	dir := t.TempDir()
	s := &NginxStatic{Root: root, AccessLog: filepath.Join(dir, "access.log")}
	if err := os.WriteFile(filepath.Join(root, ".ready"), nil, 0o644); err != nil {
		t.Fatalf("StartNginxStatic: %v", err)
	}
	s.Addr = startNginx(t, dir, "/.ready", "serving "+root, func(addr, errorLog string) string {
		return fmt.Sprintf(nginxCommon+`    server {
        listen %[4]s;
        root %[5]s;
%[6]s    }
}
`, dir, errorLog, s.AccessLog, addr, root, auth)
	})
	return s
}

// URL returns "http://127.0.0.1:PORT".
func (s *NginxStatic) URL() string { return "http://" + s.Addr }

// Requests reads the access log: every request nginx has answered.
func (s *NginxStatic) Requests(t testing.TB) []NginxRequest {
	t.Helper()
	return readNginxLog(t, s.AccessLog)
}

// startNginx runs nginx with the configuration config makes for an
// address and the error log file, on a free port, until the test ends,
// and returns the address once GET probe answers.
func startNginx(t testing.TB, dir, probe, what string, config func(addr, errorLog string) string) string {
	t.Helper()
	exe := Tool(t, "nginx")
	errorLog := filepath.Join(dir, "error.log")
	logs := func() string {
		data, _ := os.ReadFile(errorLog)
		return tail(string(data), 8192)
	}
	var listening string
	StartOnFreePort(t, func(addr string) error {
		confFile := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(confFile, []byte(config(addr, errorLog)), 0o644); err != nil {
			return err
		}
		os.Remove(errorLog)
		cmd := exec.Command(exe, "-p", dir, "-c", confFile, "-e", errorLog)
		cmd.SysProcAttr = childProcAttr()
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("%s: %w", CommandLine(cmd.Args), err)
		}
		exited := make(chan struct{})
		var waitErr error
		go func() { waitErr = cmd.Wait(); close(exited) }()
		err := waitHTTP(nil, "http://"+addr+probe, registryReadyTimeout, exited, http.StatusOK, http.StatusUnauthorized)
		select {
		case <-exited:
			if BindFailed(logs()) {
				return ErrAddrInUse
			}
			return fmt.Errorf("nginx (%s) exited: %v\n%s", CommandLine(cmd.Args), waitErr, logs())
		default:
		}
		if err != nil {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("nginx (%s) is not ready: %w\n%s", CommandLine(cmd.Args), err, logs())
		}
		listening = addr
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(registryStopTimeout):
				_ = cmd.Process.Kill()
				<-exited
			}
			if t.Failed() {
				t.Logf("nginx %s (%s) error log:\n%s", addr, what, logs())
			}
		})
		return nil
	})
	return listening
}

// nginxCommon starts every configuration: directory (1), error log (2)
// and access log (3); the server block follows.
const nginxCommon = `user root;
daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[2]s warn;
events { worker_connections 1024; }
http {
    log_format sizes '$request_method $uri $status $request_length';
    access_log %[3]s sizes;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
`

// nginxConfig is the configuration of p.
func nginxConfig(p *NginxProxy, errorLog string, opts NginxOptions) string {
	var limit, refuse string
	if opts.MaxBodySize != "" {
		limit = fmt.Sprintf("    client_max_body_size %s;\n", opts.MaxBodySize)
	}
	if opts.RefusePatch {
		refuse = "            if ($request_method = PATCH) { return 405; }\n"
	}
	return fmt.Sprintf(nginxCommon+`%[4]s    server {
        listen %[5]s;
        location / {
%[6]s            proxy_pass http://%[7]s;
            proxy_set_header Host $http_host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }
    }
}
`, p.Dir, errorLog, p.AccessLog, limit, p.Addr, refuse, p.Upstream)
}

// Ref returns "127.0.0.1:PORT/" + repo: the repository through nginx.
func (p *NginxProxy) Ref(repo string) string { return p.Addr + "/" + repo }

// URL returns "http://127.0.0.1:PORT".
func (p *NginxProxy) URL() string { return "http://" + p.Addr }

// Requests reads the access log: every request nginx has answered.
func (p *NginxProxy) Requests(t testing.TB) []NginxRequest {
	t.Helper()
	return readNginxLog(t, p.AccessLog)
}

// RequestsWhen reads the access log until done accepts it, for at most
// 10 s, and returns the last read. nginx logs a request when it frees
// it, which for a body it refused comes after its lingering close, so
// after the client has its answer.
func (p *NginxProxy) RequestsWhen(t testing.TB, done func([]NginxRequest) bool) []NginxRequest {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		reqs := readNginxLog(t, p.AccessLog)
		if done(reqs) || time.Now().After(deadline) {
			return reqs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readNginxLog(t testing.TB, file string) []NginxRequest {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("reading nginx's access log: %v", err)
	}
	var reqs []NginxRequest
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		status, _ := strconv.Atoi(f[2])
		n, _ := strconv.ParseInt(f[3], 10, 64)
		reqs = append(reqs, NginxRequest{Method: f[0], URI: f[1], Status: status, Length: n})
	}
	return reqs
}
