//go:build !unix

package backends

import "net"

// Without a non-blocking peek an idle connection cannot be checked before
// reuse: net/http makes the calls (h1.go).
const canPeek = false

func peekAlive(net.Conn) bool { return false }
