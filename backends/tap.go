package backends

import (
	"context"
	"encoding/json"
	"io"
	"sync"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// tap wraps a client transport to keep the raw bytes of results. mcp-go's
// client decodes results into typed structs that lose schema keywords and
// unknown content types; a call that wants the bytes puts a rawSink in its
// context and the tap fills it with each result of that call (the last one
// wins, which is the final result after an input_required round trip).
//
// The optional transport interfaces are forwarded, or features silently
// break: server-to-client requests (BidirectionalInterface), the protocol
// version header and cancellation behaviour (HTTPConnection) and stderr.
type tap struct {
	transport.Interface

	// The handlers the mcp-go client installed, kept for the lean call
	// path (rawcall.go), which reads the backend's SSE stream itself and
	// hands what it finds to the same handlers the transport would.
	hmu     sync.RWMutex
	notify  func(mcp.JSONRPCNotification)
	request transport.RequestHandler
}

// SetNotificationHandler keeps the handler and installs it.
func (t *tap) SetNotificationHandler(h func(mcp.JSONRPCNotification)) {
	t.hmu.Lock()
	t.notify = h
	t.hmu.Unlock()
	t.Interface.SetNotificationHandler(h)
}

func (t *tap) handlers() (func(mcp.JSONRPCNotification), transport.RequestHandler) {
	t.hmu.RLock()
	defer t.hmu.RUnlock()
	return t.notify, t.request
}

type rawSink struct {
	mu     sync.Mutex
	method string
	result json.RawMessage
}

func (s *rawSink) get() json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.result
}

type sinkKey struct{}

func withSink(ctx context.Context, method string) (context.Context, *rawSink) {
	s := &rawSink{method: method}
	return context.WithValue(ctx, sinkKey{}, s), s
}

func (t *tap) SendRequest(ctx context.Context, r transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
	resp, err := t.Interface.SendRequest(ctx, r)
	if err == nil && resp != nil && resp.Error == nil {
		if s, ok := ctx.Value(sinkKey{}).(*rawSink); ok && s.method == r.Method {
			s.mu.Lock()
			s.result = append(json.RawMessage(nil), resp.Result...)
			s.mu.Unlock()
		}
	}
	return resp, err
}

// tapBidi adds the server-to-client request handler.
type tapBidi struct {
	*tap
	bidi transport.BidirectionalInterface
}

func (t *tapBidi) SetRequestHandler(h transport.RequestHandler) {
	t.hmu.Lock()
	t.request = h
	t.hmu.Unlock()
	t.bidi.SetRequestHandler(h)
}

// tapHTTP is a bidirectional HTTP transport.
type tapHTTP struct {
	*tapBidi
	http transport.HTTPConnection
}

func (t *tapHTTP) SetProtocolVersion(v string) { t.http.SetProtocolVersion(v) }

// RequiresLegacyProtocol forwards the streamable-HTTP transport's answer:
// with the standalone GET stream enabled it must speak 2025-11-25, and the
// client only knows that if the tap says so.
func (t *tapHTTP) RequiresLegacyProtocol() bool {
	if l, ok := t.http.(interface{ RequiresLegacyProtocol() bool }); ok {
		return l.RequiresLegacyProtocol()
	}
	return false
}

// tapHTTPOneWay is an HTTP transport without server-to-client requests
// (legacy SSE).
type tapHTTPOneWay struct {
	*tap
	http transport.HTTPConnection
}

func (t *tapHTTPOneWay) SetProtocolVersion(v string) { t.http.SetProtocolVersion(v) }

// tapStdio exposes the child's stderr.
type tapStdio struct {
	*tapBidi
	stderr interface{ Stderr() io.Reader }
}

func (t *tapStdio) Stderr() io.Reader { return t.stderr.Stderr() }

// wrapTransport returns the tap with the same optional interfaces as tr,
// and the tap itself.
func wrapTransport(tr transport.Interface) (transport.Interface, *tap) {
	base := &tap{Interface: tr}
	wrapped := wrapAround(base, tr)
	return wrapped, base
}

func wrapAround(base *tap, tr transport.Interface) transport.Interface {
	bidi, isBidi := tr.(transport.BidirectionalInterface)
	if !isBidi {
		if h, ok := tr.(transport.HTTPConnection); ok {
			return &tapHTTPOneWay{tap: base, http: h}
		}
		return base
	}
	tb := &tapBidi{tap: base, bidi: bidi}
	if h, ok := tr.(transport.HTTPConnection); ok {
		return &tapHTTP{tapBidi: tb, http: h}
	}
	if s, ok := tr.(interface{ Stderr() io.Reader }); ok {
		return &tapStdio{tapBidi: tb, stderr: s}
	}
	return tb
}
