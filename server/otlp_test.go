package server

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	colmetric "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/vmcp-dev/vmcp/telemetry"
)

// otlpReceiver is an OTLP/HTTP (protobuf) receiver on loopback.
type otlpReceiver struct {
	mu      sync.Mutex
	spans   map[string]int
	metrics map[string]int
	srv     *httptest.Server
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{spans: map[string]int{}, metrics: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		switch req.URL.Path {
		case "/v1/traces":
			var m coltrace.ExportTraceServiceRequest
			if err := proto.Unmarshal(b, &m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			for _, rs := range m.ResourceSpans {
				for _, ss := range rs.ScopeSpans {
					for _, s := range ss.Spans {
						r.spans[s.Name]++
					}
				}
			}
			out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
			w.Header().Set("Content-Type", "application/x-protobuf")
			_, _ = w.Write(out)
		case "/v1/metrics":
			var m colmetric.ExportMetricsServiceRequest
			if err := proto.Unmarshal(b, &m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			for _, rm := range m.ResourceMetrics {
				for _, sm := range rm.ScopeMetrics {
					for _, mm := range sm.Metrics {
						r.metrics[mm.Name]++
					}
				}
			}
			out, _ := proto.Marshal(&colmetric.ExportMetricsServiceResponse{})
			w.Header().Set("Content-Type", "application/x-protobuf")
			_, _ = w.Write(out)
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func otlpTelemetry(t *testing.T, endpoint string) *telemetry.T {
	t.Helper()
	cfg := telemetry.Config{
		Traces:  telemetry.TracesConfig{Exporter: "otlp", Endpoint: endpoint},
		Metrics: telemetry.MetricsConfig{OTLP: true, OTLPEndpoint: endpoint, OTLPInterval: time.Hour},
	}
	tel, err := telemetry.New(t.Context(), cfg, &telemetry.Options{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	return tel
}

// Spans and metrics reach a real OTLP/HTTP receiver through the real
// exporters.
func TestOTLPExport(t *testing.T) {
	rcv := newOTLPReceiver(t)
	tel := otlpTelemetry(t, rcv.srv.URL)
	echo := newMetaBackend(t)
	_, url := startObserved(t, observedConfig(t, echo.url, false), filepath.Join(t.TempDir(), "state.db"), tel)
	c := sessionClient(t, url, "")
	if res := callJSON(t, c, "echo_echo", `{"message":"hi"}`); res.IsError {
		t.Fatal(text(res))
	}
	if res := callJSON(t, c, "echo_run", `{"message":"hi"}`); res.IsError {
		t.Fatal(text(res))
	}
	if err := tel.Shutdown(t.Context()); err != nil { // flushes both pipelines
		t.Fatal(err)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for _, name := range []string{"tools/call echo_echo", "tools/call echo", "tools/call echo_run", "invoke_workflow echo_run"} {
		if rcv.spans[name] == 0 {
			t.Errorf("span %q not received (got %v)", name, rcv.spans)
		}
	}
	for _, name := range []string{telemetry.MetricServerDuration, telemetry.MetricClientDuration, telemetry.MetricRunsStarted, telemetry.MetricRunSegment} {
		if rcv.metrics[name] == 0 {
			t.Errorf("metric %q not received (got %v)", name, rcv.metrics)
		}
	}
}

// With the receiver down, calls still succeed; only the export fails.
func TestOTLPReceiverDown(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	endpoint := down.URL
	down.Close()
	tel := otlpTelemetry(t, endpoint)
	echo := newMetaBackend(t)
	_, url := startObserved(t, observedConfig(t, echo.url, false), filepath.Join(t.TempDir(), "state.db"), tel)
	c := sessionClient(t, url, "")
	for i := 0; i < 50; i++ {
		if res := callJSON(t, c, "echo_echo", `{"message":"hi"}`); res.IsError {
			t.Fatal(text(res))
		}
	}
	if res := callJSON(t, c, "echo_run", `{"message":"hi"}`); res.IsError {
		t.Fatal(text(res))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err == nil {
		t.Fatal("exporting to a closed port reported no error: the test did not exercise a down receiver")
	}
}
