package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
)

// floorNumbers are the floors' medians, for the ratios.
type floorNumbers struct {
	rawHTTP, proxy, hop, mcpDirect, fsync, commit time.Duration
}

// echoBody is a request about the size of an MCP echo call.
var echoBody = []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"msg":"hello, floor","sleep_ms":0}}}`)

// floors measures the machine's floors: a raw HTTP round trip, a reverse
// proxy hop, a direct mcp-go echo call, one fsync, one bbolt commit.
func (b *bench) floors(ctx context.Context) error {
	var err error
	if b.floorSrv, err = b.child("http-floor", "http-floor"); err != nil {
		return err
	}
	if b.proxySrv, err = b.child("proxy", "proxy", "--target", "http://"+b.floorSrv.Addr); err != nil {
		return err
	}
	if b.echoSrv, err = b.child("echo-backend", "echo-backend", "--endpoints", "1", "--tools", "2"); err != nil {
		return err
	}
	d := b.dur(500*time.Millisecond, 2*time.Second)
	const sc = "floors"
	hc := newHTTPClient()
	post := func(url string) func(ctx context.Context, _ int) error {
		return func(ctx context.Context, _ int) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(echoBody))
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			got, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK || !bytes.Equal(got, echoBody) {
				return fmt.Errorf("wrong answer: HTTP %d %q", resp.StatusCode, truncate(string(got), 100))
			}
			return nil
		}
	}
	raw := b.rep.addCell(cell(sc, "raw HTTP round trip", nil, runLoad(ctx, 1, 50, d, 100, 0, post("http://"+b.floorSrv.Addr+"/echo"))))
	prx := b.rep.addCell(cell(sc, "httputil.ReverseProxy hop (client → proxy → server)", nil, runLoad(ctx, 1, 50, d, 100, 0, post("http://"+b.proxySrv.Addr+"/echo"))))

	s, err := dial(ctx, b.echoURL(0), eraLegacy)
	if err != nil {
		return fmt.Errorf("direct echo session: %w", err)
	}
	i := 0
	direct := b.rep.addCell(cell(sc, "direct mcp-go echo call (2025-11-25 session)", nil, runLoad(ctx, 1, 50, d, 100, 0, func(ctx context.Context, _ int) error {
		i++
		return callEcho(ctx, s.Client, "echo", fmt.Sprint("floor-", i), 0)
	})))
	s.Close()

	n := b.n(100, 400)
	fs := b.rep.addCell(cell(sc, "fsync (4 KiB write + fsync, state dir)", nil, fsyncFloor(ctx, b.work, n)))
	cm := b.rep.addCell(cell(sc, "bbolt commit (one Update of a small key, state dir)", nil, commitFloor(ctx, b.work, n)))
	for _, c := range []Cell{raw, prx, direct, fs, cm} {
		if !c.Valid {
			return fmt.Errorf("%s: %s", c.Name, c.Error)
		}
	}
	f := &b.floor
	f.rawHTTP, f.proxy, f.mcpDirect = usDur(raw.P50US), usDur(prx.P50US), usDur(direct.P50US)
	f.hop = max(f.proxy-f.rawHTTP, time.Microsecond)
	f.fsync, f.commit = usDur(fs.P50US), usDur(cm.P50US)

	var rows [][]string
	for _, c := range []Cell{raw, prx, direct, fs, cm} {
		rows = append(rows, append([]string{c.Name}, cellRow(c)...))
	}
	body := mdTable([]string{"floor", "n", "p50", "p99", "rate (1 at a time)"}, rows)
	body += fmt.Sprintf("\nThe reverse-proxy **hop** (proxy p50 − raw p50) is **%s**: the yardstick for a gateway's added latency. "+
		"Each server is a separate process on loopback; the client is the bench process with keep-alive connections. "+
		"fsync and the bbolt commit run in the bench process on the state directory's filesystem (%s).\n",
		fmtD(f.hop), b.rep.Machine.StateFS)
	b.rep.addSection(sc, "Floors", body)
	return nil
}

func usDur(v float64) time.Duration { return time.Duration(v * float64(time.Microsecond)) }

func (b *bench) echoURL(i int) string { return fmt.Sprintf("http://%s/mcp/%d", b.echoSrv.Addr, i) }

func fsyncFloor(ctx context.Context, dir string, n int) load {
	f, err := os.Create(filepath.Join(dir, "fsync.floor"))
	if err != nil {
		return load{Err: err}
	}
	defer os.Remove(f.Name())
	defer f.Close()
	page := bytes.Repeat([]byte{'x'}, 4096)
	return timeN(ctx, 5, n, func(context.Context) error {
		if _, err := f.WriteAt(page, 0); err != nil {
			return err
		}
		return f.Sync()
	})
}

func commitFloor(ctx context.Context, dir string, n int) load {
	path := filepath.Join(dir, "commit.floor.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		return load{Err: err}
	}
	defer os.Remove(path)
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		return load{Err: err}
	}
	i := 0
	return timeN(ctx, 5, n, func(context.Context) error {
		i++
		return db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%d", i%1000), []byte("a small value"))
		})
	})
}
