package backends

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// h1Server is a plain HTTP server counting the connections it accepted.
func h1Server(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	ts := httptest.NewUnstartedServer(h)
	ts.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)
	return ts, &conns
}

func h1Post(t *testing.T, ctx context.Context, p *h1Pool, u, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Test", "yes")
	return p.do(req)
}

// Exchanges on the caller's goroutine keep their connection alive across
// calls, send net/http's wire format, and read the response's framing;
// a connection the backend closed while idle is noticed before reuse; a
// response that asks to close, a body left unread and a cancelled call
// each cost their connection, never a later call.
func TestH1Pool(t *testing.T) {
	var closeNext atomic.Bool
	ts, conns := h1Server(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch {
		case r.Header.Get("X-Test") != "yes" || r.ContentLength != int64(len(b)) || r.Method != http.MethodPost:
			http.Error(w, "not the request sent", http.StatusBadRequest)
		case string(b) == "stream":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: 1\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case string(b) == "hang":
			<-r.Context().Done()
		case string(b) == "hints":
			w.Header().Set("Link", "</x>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"echo":%q}`, b)
		default:
			if closeNext.Swap(false) {
				w.Header().Set("Connection", "close")
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"echo":%q}`, b)
		}
	})
	p := newH1Pool(ts.URL+"/mcp", pooledClient())
	if p == nil {
		t.Fatal("no pool for a plain-HTTP backend")
	}
	call := func(body string) {
		t.Helper()
		resp, err := h1Post(t, t.Context(), p, ts.URL+"/mcp", body)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || string(got) != fmt.Sprintf(`{"echo":%q}`, body) {
			t.Fatalf("%s: HTTP %d %q %v", body, resp.StatusCode, got, err)
		}
	}
	for i := range 20 {
		call(fmt.Sprint("m", i))
	}
	call("hints") // a 103 before the response is skipped
	if n := conns.Load(); n != 1 {
		t.Fatalf("20 sequential calls used %d connections, want 1", n)
	}
	// The backend drops its idle connections: the next call notices.
	ts.CloseClientConnections()
	call("after close")
	if n := conns.Load(); n != 2 {
		t.Fatalf("connections %d after the backend closed the idle one, want 2", n)
	}
	// Connection: close is honoured.
	closeNext.Store(true)
	call("closing")
	call("next")
	if n := conns.Load(); n != 3 {
		t.Fatalf("connections %d after a Connection: close response, want 3", n)
	}
	// A body closed before its end (a stream the caller stopped reading)
	// closes its connection.
	resp, err := h1Post(t, t.Context(), p, ts.URL+"/mcp", "stream")
	if err != nil {
		t.Fatal(err)
	}
	if line, _ := io.ReadAll(io.LimitReader(resp.Body, 7)); string(line) != "data: 1" {
		t.Fatalf("stream: %q", line)
	}
	_ = resp.Body.Close()
	call("after stream")
	if n := conns.Load(); n != 4 {
		t.Fatalf("connections %d after an unfinished body, want 4", n)
	}
	// Cancelling a waiting call ends it with net/http's error, and its
	// connection is not reused.
	ctx, cancel := context.WithCancel(t.Context())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err = h1Post(t, ctx, p, ts.URL+"/mcp", "hang")
	var ue *url.Error
	if !errors.As(err, &ue) || ue.Op != "Post" || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %#v", err)
	}
	call("after cancel")
	if n := conns.Load(); n != 5 {
		t.Fatalf("connections %d after a cancelled call, want 5", n)
	}
	// An idle connection past the transport's IdleConnTimeout is not reused.
	if p.idleFor != 90*time.Second {
		t.Errorf("idle timeout %s, want the transport's 90s", p.idleFor)
	}
	p.idleFor = time.Nanosecond
	call("after idle timeout")
	if n := conns.Load(); n != 6 {
		t.Fatalf("connections %d after the idle timeout, want 6", n)
	}
	p.idleFor = 90 * time.Second
	// Closing the pool closes its idle connections; calls still work.
	p.close()
	call("after pool close")
	// A backend that is not there: net/http's error shape.
	dead := newH1Pool("http://127.0.0.1:1/mcp", pooledClient())
	if _, err := h1Post(t, t.Context(), dead, "http://127.0.0.1:1/mcp", "x"); !errors.As(err, &ue) || ue.Op != "Post" {
		t.Fatalf("unreachable backend: %#v", err)
	}
}

// Only vmcp's own client to a plain-HTTP URL without a proxy takes the
// exchange; everything else stays with net/http.
func TestH1PoolOnlyWherePlain(t *testing.T) {
	plain := pooledClient()
	proxied := pooledClient()
	proxied.Transport.(*http.Transport).Proxy = func(*http.Request) (*url.URL, error) { return url.Parse("http://proxy:3128") }
	authed := pooledClient()
	authed.Transport = &authTransport{base: authed.Transport}
	for _, c := range []struct {
		url  string
		hc   *http.Client
		want bool
	}{
		{"http://127.0.0.1:8080/mcp", plain, true},
		{"http://backend/mcp", plain, true},
		{"https://backend/mcp", plain, false},
		{"http://user:pw@backend/mcp", plain, false},
		{"http://backend/mcp", proxied, false},
		{"http://backend/mcp", authed, false},
		{"::bad", plain, false},
	} {
		if got := newH1Pool(c.url, c.hc) != nil; got != c.want {
			t.Errorf("%s (%T): h1 %v, want %v", c.url, c.hc.Transport, got, c.want)
		}
	}
	if p := newH1Pool("http://backend/mcp", plain); p != nil && p.addr != "backend:80" {
		t.Errorf("address %q, want backend:80", p.addr)
	}
}
