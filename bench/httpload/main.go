// Command httpload requests URL paths read from standard input (each
// once, or -repeat times), at a given concurrency, and prints requests per
// second and latency percentiles. Unlike wrk looping over the same URLs,
// it measures a cold cache when each path is asked for the first time.
//
//	sed 's/$/.narinfo/; s/^/\//' hashes.txt | go run ./bench/httpload -c 16 http://127.0.0.1:8080
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"
)

func main() {
	conc := flag.Int("c", 16, "concurrent requests")
	repeat := flag.Int("repeat", 1, "request the list this many times")
	identity := flag.Bool("identity", false, "send no Accept-Encoding (as Nix), instead of Go's default gzip")
	flag.Parse()
	base := flag.Arg(0)
	var paths []string
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		paths = append(paths, sc.Text())
	}
	var all []string
	for range *repeat {
		all = append(all, paths...)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conc, DisableCompression: *identity}}
	lat := make([]time.Duration, len(all))
	var failures int
	var mu sync.Mutex
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				t := time.Now()
				resp, err := client.Get(base + all[i])
				ok := err == nil && resp.StatusCode == 200
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				lat[i] = time.Since(t)
				if !ok {
					mu.Lock()
					failures++
					mu.Unlock()
				}
			}
		}()
	}
	for i := range all {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	el := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	fmt.Printf("%d requests, %d failed, %.0f req/s, p50 %v, p99 %v\n", len(all), failures,
		float64(len(all))/el.Seconds(), pct(0.5).Round(time.Microsecond), pct(0.99).Round(time.Microsecond))
	if failures > 0 {
		os.Exit(1)
	}
}
