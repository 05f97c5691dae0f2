// Command abuseload measures what a burst of wrong-password uploads
// does to a bystander: it asks for a narinfo every 10 ms for -duration
// (the bystander, from 127.0.0.1) and, a second in, sends -wrong PUTs
// with wrong passwords at once (from 127.0.0.4, as another client), then
// prints the bystander's latency percentiles and the PUTs' statuses:
//
//	p50_ms p99_ms max_ms failures burst_s statuses
//
//	go run ./bench/abuseload -narinfo http://127.0.0.1:8080/<hash>.narinfo -put http://127.0.0.1:8080/nix-cache-info
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	narinfo := flag.String("narinfo", "", "URL the bystander asks for")
	put := flag.String("put", "", "URL the wrong passwords are sent to")
	wrong := flag.Int("wrong", 40, "PUTs with wrong passwords, at once")
	duration := flag.Duration("duration", 10*time.Second, "how long the bystander asks")
	flag.Parse()
	if *narinfo == "" || *put == "" {
		flag.Usage()
		os.Exit(2)
	}
	var lat []time.Duration
	failures := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		client := &http.Client{Timeout: 30 * time.Second}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		end := time.Now().Add(*duration)
		for range tick.C {
			if time.Now().After(end) {
				return
			}
			start := time.Now()
			resp, err := client.Get(*narinfo)
			if err != nil {
				failures++
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				failures++
			}
			lat = append(lat, time.Since(start))
		}
	}()
	time.Sleep(time.Second) // the bystander alone first
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.4")}}
	attacker := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: *wrong}, Timeout: 5 * time.Minute}
	statuses := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i := range *wrong {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPut, *put, strings.NewReader("StoreDir: /nix/store\n"))
			req.SetBasicAuth("ci", "guess-"+strconv.Itoa(i))
			code := 0
			if resp, err := attacker.Do(req); err == nil {
				resp.Body.Close()
				code = resp.StatusCode
			}
			mu.Lock()
			statuses[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	burst := time.Since(start)
	<-done
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
	}
	var codes []string
	for code, n := range statuses {
		codes = append(codes, fmt.Sprintf("%d:%d", code, n))
	}
	sort.Strings(codes)
	fmt.Printf("%.2f %.2f %.2f %d %.2f %s\n", pct(0.5), pct(0.99), pct(1), failures, burst.Seconds(), strings.Join(codes, ","))
}
