// Command hello is a tiny main package that testenv's tests build with
// BuildBinary.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	fmt.Printf("hello %s\n", strings.Join(os.Args[1:], " "))
}
