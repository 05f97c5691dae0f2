// Command latencyproxy puts a fixed delay before every request to a
// registry, so a registry on loopback behaves like a remote one.
//
//	latencyproxy -listen 127.0.0.1:5001 -to http://127.0.0.1:5000 -delay 20ms
//
// On SIGTERM or SIGINT it prints how many requests it forwarded.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nixoci/nixoci/internal/latencyproxy"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	to := flag.String("to", "", "registry to forward to, e.g. http://127.0.0.1:5000")
	delay := flag.Duration("delay", 0, "delay before forwarding each request")
	trace := flag.Bool("trace", false, "log each request to stderr: ms since start, method, path")
	flag.Parse()
	p, err := latencyproxy.New(*to, *delay)
	if err != nil {
		log.Fatal(err)
	}
	var h http.Handler = p
	if *trace {
		start := time.Now()
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(os.Stderr, "%d %s %s\n", time.Since(start).Milliseconds(), r.Method, r.URL.Path)
			p.ServeHTTP(w, r)
		})
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	<-ctx.Done()
	srv.Close()
	fmt.Fprintf(os.Stderr, "requests %d upload-bytes %d\n", p.Requests(), p.UploadBytes())
}
