package backends

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The lean path's HTTP/1.1 exchange with a plain-HTTP backend.
//
// net/http's Transport runs every connection with a writer and a reader
// goroutine and hands each request and response between them and the
// caller: several goroutine wake-ups per call, on top of the two syscalls
// the exchange needs. For a tools/call on the lean path (rawcall.go) to a
// backend over plain http://, the request is written and the response read
// here, on the calling goroutine, over keep-alive connections of the
// session's own small pool:
//
//   - the request is net/http's own wire format (http.Request.Write: Host,
//     User-Agent, Content-Length, the session's headers) and the response
//     is read by http.ReadResponse (Content-Length, chunked, SSE streams,
//     Connection: close);
//   - a connection goes back to the pool only when its response body was
//     read to the end, the backend did not ask to close it, and the call's
//     context did not end during it; anything else closes it;
//   - an idle connection is checked before reuse with a non-blocking
//     MSG_PEEK (one recv that does not wait): a backend that closed it
//     while idle is noticed before the request is written, as net/http's
//     reader goroutine notices it, so a call is never sent on a dead
//     connection that was known dead (no retries, as net/http does not
//     retry a POST);
//   - an idle connection older than the transport's IdleConnTimeout (90 s)
//     is closed instead of reused, as net/http does;
//   - the end of the call's context (cancellation, backends[].timeout)
//     interrupts a blocked write or read, and errors are reported as
//     net/http's client reports them (*url.Error, Op "Post").
//
// Taken only when the session's HTTP client is vmcp's own (pooledClient:
// no outgoing-credential wrapper), the URL is http:// without userinfo,
// no proxy applies and the platform can peek (h1peek_*.go); otherwise
// net/http makes the call, as before.

// h1Pool is a session's keep-alive connections to its backend.
type h1Pool struct {
	addr string // host:port
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// maxIdle bounds the idle connections kept (the transport's
	// MaxIdleConnsPerHost).
	maxIdle int
	// idleFor is how long an idle connection is kept (the transport's
	// IdleConnTimeout; 0: no limit).
	idleFor time.Duration
	mu      sync.Mutex
	idle    []*h1Conn
	closed  bool
}

type h1Conn struct {
	nc   net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	idle time.Time // when it went back to the pool
}

// newH1Pool returns the pool for a session's URL, or nil when net/http
// must make its calls.
func newH1Pool(rawURL string, hc *http.Client) *h1Pool {
	if !canPeek {
		return nil
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Host == "" {
		return nil
	}
	t, ok := hc.Transport.(*http.Transport)
	if !ok || hc.Jar != nil || hc.CheckRedirect != nil || hc.Timeout != 0 {
		return nil
	}
	if t.Proxy != nil {
		if p, err := t.Proxy(&http.Request{Method: http.MethodPost, URL: u, Header: http.Header{}}); err != nil || p != nil {
			return nil
		}
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	maxIdle := t.MaxIdleConnsPerHost
	if maxIdle <= 0 {
		maxIdle = http.DefaultMaxIdleConnsPerHost
	}
	return &h1Pool{addr: addr, dial: dial, maxIdle: maxIdle, idleFor: t.IdleConnTimeout}
}

// do sends req and returns its response; the body must be closed.
func (p *h1Pool) do(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	fail := func(err error) (*http.Response, error) {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
		return nil, &url.Error{Op: urlOp(req.Method), URL: req.URL.String(), Err: err}
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	c, err := p.get(ctx)
	if err != nil {
		return fail(err)
	}
	stop := context.AfterFunc(ctx, func() {
		_ = c.nc.SetDeadline(time.Unix(1, 0)) // interrupts a blocked write or read
	})
	resp, err := c.exchange(req)
	if err != nil {
		stop()
		_ = c.nc.Close()
		return fail(err)
	}
	resp.Body = &h1Body{p: p, c: c, body: resp.Body, stop: stop, keep: !resp.Close}
	return resp, nil
}

// urlOp is how net/http's client names a method in its errors.
func urlOp(method string) string {
	if method == "" {
		return "Get"
	}
	return method[:1] + strings.ToLower(method[1:])
}

func (c *h1Conn) exchange(req *http.Request) (*http.Response, error) {
	if err := req.Write(c.bw); err != nil {
		return nil, err
	}
	if err := c.bw.Flush(); err != nil {
		return nil, err
	}
	for {
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, err
		}
		// Informational responses (103 Early Hints, …) come before the
		// response and carry no body: net/http skips them too.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		return resp, nil
	}
}

// get takes a live idle connection or dials one.
func (p *h1Pool) get(ctx context.Context) (*h1Conn, error) {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if c.br.Buffered() == 0 && (p.idleFor <= 0 || time.Since(c.idle) < p.idleFor) && peekAlive(c.nc) {
			return c, nil
		}
		_ = c.nc.Close() // closed by the backend, or unexpected bytes
	}
	nc, err := p.dial(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return &h1Conn{nc: nc, br: bufio.NewReaderSize(nc, 4096), bw: bufio.NewWriterSize(nc, 4096)}, nil
}

// put returns a connection whose exchange is complete.
func (p *h1Pool) put(c *h1Conn) {
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		_ = c.nc.Close()
		return
	}
	c.idle = time.Now()
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// close closes the idle connections; connections in use close when their
// calls end.
func (p *h1Pool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		_ = c.nc.Close()
	}
}

// h1Body is a response body; Close settles its connection.
type h1Body struct {
	p      *h1Pool
	c      *h1Conn
	body   io.ReadCloser
	stop   func() bool
	keep   bool
	eof    atomic.Bool
	closed atomic.Bool
}

func (b *h1Body) Read(q []byte) (int, error) {
	n, err := b.body.Read(q)
	if errors.Is(err, io.EOF) {
		b.eof.Store(true)
	}
	return n, err
}

// Close may be called from another goroutine during a Read (to interrupt
// it): the connection is then closed, never reused.
func (b *h1Body) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	stopped := b.stop()
	// stopped: the context's end never touched the connection's deadline.
	if b.eof.Load() && stopped && b.keep {
		b.p.put(b.c)
		return nil
	}
	return b.c.nc.Close()
}

// do is the session's HTTP exchange: here for plain HTTP, else net/http.
func (rs *rawSession) do(req *http.Request) (*http.Response, error) {
	if rs.h1 != nil {
		return rs.h1.do(req)
	}
	return rs.hc.Do(req)
}

// closeIdle closes the session's idle plain-HTTP connections (nil-safe).
func (rs *rawSession) closeIdle() {
	if rs != nil && rs.h1 != nil {
		rs.h1.close()
	}
}
