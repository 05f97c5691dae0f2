// Command fileserver serves a directory with Go's net/http FileServer:
// the floor for any Go HTTP server sending files, next to nginx in
// bench/serve.sh.
//
//	go run ./bench/fileserver 127.0.0.1:8080 /srv/cache
package main

import (
	"log"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: fileserver ADDR DIR")
	}
	log.Fatal(http.ListenAndServe(os.Args[1], http.FileServer(http.Dir(os.Args[2]))))
}
