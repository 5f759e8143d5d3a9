// Command etcd is the etcd server built from the published go.etcd.io/etcd/server/v3
// module (the etcd root module cannot be built with `go install` because of its
// replace directives). See ../README.md.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
