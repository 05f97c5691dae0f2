// Command narinfo-load requests every narinfo of a list once, at a given
// concurrency, and prints requests per second and latency percentiles.
// It measures a cold cache (each path asked for the first time), which
// wrk, looping over the same URLs, cannot.
//
//	go run ./bench/narinfo-load -c 16 http://127.0.0.1:8080 < hashes.txt
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
	flag.Parse()
	base := flag.Arg(0)
	var hashes []string
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		hashes = append(hashes, sc.Text())
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conc}}
	lat := make([]time.Duration, len(hashes))
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
				resp, err := client.Get(base + "/" + hashes[i] + ".narinfo")
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
	for i := range hashes {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	el := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	fmt.Printf("%d requests, %d failed, %.0f req/s, p50 %v, p99 %v\n", len(hashes), failures,
		float64(len(hashes))/el.Seconds(), pct(0.5).Round(time.Microsecond), pct(0.99).Round(time.Microsecond))
	if failures > 0 {
		os.Exit(1)
	}
}
