// Command resolver is the grpc-go peer of lodestar's propagation bench: a
// grpc-go ClientConn whose addresses come from etcd's official naming
// resolver (go.etcd.io/etcd/clientv3/naming/resolver, etcd 3.4), built in
// GOPATH mode from Debian's packages (cargo xtask bench does it).
//
// Usage: resolver ETCD_ENDPOINT TARGET
//
// It dials "etcd:///TARGET" and wraps the ClientConn the resolver updates,
// so it sees each address list exactly when grpc-go does. It prints
// "ready" once the resolver is built (listed and watching), then "visible ADDR" for each
// address that appears and "gone ADDR" for each that leaves, one line each,
// flushed at once; the bench times a put under TARGET/ until the line.
package main

import (
	"bufio"
	"fmt"
	"os"
	"sync"

	clientv3 "go.etcd.io/etcd/clientv3"
	etcdresolver "go.etcd.io/etcd/clientv3/naming/resolver"
	"google.golang.org/grpc"
	gresolver "google.golang.org/grpc/resolver"
)

// out is stdout, flushed after every line.
type out struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (o *out) line(format string, args ...interface{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintf(o.w, format+"\n", args...)
	o.w.Flush()
}

// watching wraps the resolver's ClientConn: it reports what changed, then
// hands the state to grpc-go unchanged.
type watching struct {
	gresolver.ClientConn
	out   *out
	mu    sync.Mutex
	known map[string]bool
}

func (w *watching) UpdateState(state gresolver.State) {
	w.mu.Lock()
	now := make(map[string]bool, len(state.Addresses))
	for _, a := range state.Addresses {
		now[a.Addr] = true
		if !w.known[a.Addr] {
			w.out.line("visible %s", a.Addr)
		}
	}
	for addr := range w.known {
		if !now[addr] {
			w.out.line("gone %s", addr)
		}
	}
	w.known = now
	w.mu.Unlock()
	w.ClientConn.UpdateState(state)
}

// builder wraps etcd's resolver builder so the ClientConn it updates is ours.
type builder struct {
	inner gresolver.Builder
	out   *out
}

func (b builder) Build(t gresolver.Target, cc gresolver.ClientConn, o gresolver.BuildOptions) (gresolver.Resolver, error) {
	return b.inner.Build(t, &watching{ClientConn: cc, out: b.out, known: map[string]bool{}}, o)
}

func (b builder) Scheme() string { return b.inner.Scheme() }

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: resolver ETCD_ENDPOINT TARGET")
		os.Exit(2)
	}
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{os.Args[1]}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "connecting to etcd:", err)
		os.Exit(1)
	}
	defer client.Close()
	inner, err := etcdresolver.NewBuilder(client)
	if err != nil {
		fmt.Fprintln(os.Stderr, "resolver:", err)
		os.Exit(1)
	}
	o := &out{w: bufio.NewWriter(os.Stdout)}
	conn, err := grpc.Dial("etcd:///"+os.Args[2], grpc.WithInsecure(), grpc.WithResolvers(builder{inner: inner, out: o}))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	// Dial built the resolver, which listed TARGET/ and watches from the
	// revision after: every later put is seen.
	o.line("ready")
	// Until stdin closes: the bench ends it by closing our stdin (or killing us).
	buf := make([]byte, 1)
	for {
		if _, err := os.Stdin.Read(buf); err != nil {
			return
		}
	}
}
