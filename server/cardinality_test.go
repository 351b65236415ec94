package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// cardSession is a 2025-11-25 session driven with plain HTTP (fast enough
// for thousands of calls under the race detector).
type cardSession struct {
	url, token, sid string
	hc              *http.Client
}

func (s *cardSession) post(body string) ([]byte, http.Header, error) {
	req, _ := http.NewRequest(http.MethodPost, s.url+"/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+s.token)
	if s.sid != "" {
		req.Header.Set("Mcp-Session-Id", s.sid)
		req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return nil, nil, fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	if i := bytes.Index(b, []byte("data: ")); i >= 0 {
		b = bytes.TrimSpace(b[i+6:])
	}
	return b, resp.Header, err
}

func openCardSession(url, token string, hc *http.Client) (*cardSession, error) {
	s := &cardSession{url: url, token: token, hc: hc}
	_, h, err := s.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"card","version":"1"}}}`)
	if err != nil {
		return nil, err
	}
	s.sid = h.Get("Mcp-Session-Id")
	if s.sid == "" {
		return nil, fmt.Errorf("no session id")
	}
	_, _, err = s.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return s, err
}

// call returns the run id of a composite's result ("" for plain tools).
func (s *cardSession) call(tool, args string) (string, error) {
	b, _, err := s.post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":` + args + `}}`)
	if err != nil {
		return "", err
	}
	var r struct {
		Result struct {
			IsError bool `json:"isError"`
			Meta    struct {
				Run struct {
					ID string `json:"id"`
				} `json:"vmcp/run"`
			} `json:"_meta"`
		} `json:"result"`
		Error any `json:"error"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Error != nil || r.Result.IsError {
		return "", fmt.Errorf("%s: %s", tool, b)
	}
	return r.Result.Meta.Run.ID, nil
}

func series(fams map[string]*dto.MetricFamily) (n int, values map[string]bool) {
	values = map[string]bool{}
	for name, f := range fams {
		if !strings.HasPrefix(name, "vmcp_") && !strings.HasPrefix(name, "mcp_") {
			continue
		}
		for _, m := range f.Metric {
			n++
			for _, l := range m.Label {
				values[l.GetValue()] = true
			}
		}
	}
	return n, values
}

// Cardinality: 10,000 calls over 1,000 sessions, 1,000 runs and 3
// principals make no more series than the first 100 calls with the same
// tools, and no label value is a run id, session id, token or argument.
func TestMetricsCardinality(t *testing.T) {
	const (
		calls    = 10000
		sessions = 1000
		runs     = 1000 // every 10th call is a composite run
		workers  = 8
	)
	tel, _ := fullTelemetry(t)
	echo := newMetaBackend(t)
	_, url := startObserved(t, observedConfig(t, echo.url, true), filepath.Join(t.TempDir(), "state.db"), tel)
	tokens := []string{"alice-token", "bob-token", "carol-token"}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}

	var (
		mu     sync.Mutex
		secret = map[string]string{} // value → what it is
	)
	for _, tok := range tokens {
		secret[tok] = "token"
	}
	sess := make([]*cardSession, sessions)
	for i := range sess {
		s, err := openCardSession(url, tokens[i%len(tokens)], hc)
		if err != nil {
			t.Fatal(err)
		}
		sess[i] = s
		secret[s.sid] = "session id"
	}
	do := func(from, to int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		next := make(chan int)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					arg := fmt.Sprintf("arg-%05d", i)
					tool := "echo_echo"
					if i%(calls/runs) == 0 {
						tool = "echo_run"
					}
					id, err := sess[i%sessions].call(tool, `{"message":"`+arg+`"}`)
					if err != nil {
						select {
						case errs <- err:
						default:
						}
						continue
					}
					mu.Lock()
					secret[arg] = "argument"
					if id != "" {
						secret[id] = "run id"
					}
					mu.Unlock()
				}
			}()
		}
		for i := from; i < to; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
	}
	do(0, 100)
	first, _ := series(scrape(t, url))
	do(100, calls)
	n, values := series(scrape(t, url))
	if n != first {
		t.Errorf("%d series after %d calls, %d after the first 100", n, calls, first)
	}
	runIDs := 0
	for _, what := range secret {
		if what == "run id" {
			runIDs++
		}
	}
	if runIDs != runs {
		t.Fatalf("%d runs seen, want %d", runIDs, runs)
	}
	for v := range values {
		if what, ok := secret[v]; ok {
			t.Errorf("label value %q is a %s", v, what)
		}
	}
}
