package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Config is the telemetry block of vmcp.yaml (the server converts it).
// The zero value is off.
type Config struct {
	ServiceName    string
	ServiceVersion string
	Traces         TracesConfig
	Metrics        MetricsConfig
	Audit          AuditConfig
}

// TracesConfig selects the span exporter.
type TracesConfig struct {
	// Exporter is "none" (or ""), "otlp" or "stdout".
	Exporter string
	// Endpoint is the OTLP/HTTP base URL (http://host:4318); "" uses
	// OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT or the default.
	Endpoint string
	// SamplingRatio is parent-based; nil means 1.0.
	SamplingRatio *float64
	// PropagateBaggage forwards the client's baggage to backends.
	PropagateBaggage bool
}

// MetricsConfig selects the metric readers.
type MetricsConfig struct {
	// Prometheus serves /metrics (MetricsHandler).
	Prometheus bool
	// OTLP pushes metrics over OTLP/HTTP to OTLPEndpoint (or the OTEL_*
	// endpoint variables).
	OTLP         bool
	OTLPEndpoint string
	// OTLPInterval is the push interval (0: 60 s or OTEL_METRIC_EXPORT_INTERVAL).
	OTLPInterval time.Duration
	// NoToolLabel drops gen_ai_tool_name from the operation metrics (very
	// large catalogues).
	NoToolLabel bool
	// CardinalityLimit caps the series per instrument (0: 2000).
	CardinalityLimit int
}

// Options are what a config file cannot say; nil is valid.
type Options struct {
	Logger *slog.Logger
	// Getenv reads OTEL_* variables (nil: os.Getenv).
	Getenv func(string) string
	// SpanProcessor is added to the tracer provider (tests record spans
	// with it); it turns tracing on.
	SpanProcessor sdktrace.SpanProcessor
	// MetricReader is added to the meter provider (tests collect with a
	// manual reader); it turns metrics on.
	MetricReader sdkmetric.Reader
	// AuditWriter receives audit lines instead of Audit.Path.
	AuditWriter io.Writer
	// SDKSpans keeps SDK spans for requests and calls even where lean
	// spans would be used (lean.go): benchmarks and tests compare both.
	SDKSpans bool
}

// T is vmcp's telemetry. A nil *T is off.
type T struct {
	log       *slog.Logger
	tp        *sdktrace.TracerProvider
	tracer    trace.Tracer // nil: no tracing
	lean      *leanTracer  // non-nil: requests and calls use lean spans
	prop      propagation.TextMapPropagator
	mp        *sdkmetric.MeterProvider
	m         *instruments // nil: no metrics
	prom      http.Handler
	audit     *Audit
	toolLabel bool

	sessions sync.Map // session id → *session

	baggage bool // propagate baggage to backends
	namesMu sync.RWMutex
	names   map[[2]string]string // span names by (method, target)

	closers []func(context.Context) error
	once    sync.Once
}

// New builds the providers. It returns (nil, nil) when everything is off:
// the nil *T is the no-op.
func New(ctx context.Context, cfg Config, opts *Options) (*T, error) {
	if opts == nil {
		opts = &Options{}
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if v := getenv("OTEL_SDK_DISABLED"); strings.EqualFold(v, "true") {
		cfg.Traces.Exporter, cfg.Metrics.Prometheus, cfg.Metrics.OTLP = "none", false, false
		opts.SpanProcessor, opts.MetricReader = nil, nil
	}
	if v := getenv("OTEL_SERVICE_NAME"); v != "" {
		cfg.ServiceName = v
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "vmcp"
	}
	switch v := strings.ToLower(getenv("OTEL_TRACES_EXPORTER")); v {
	case "otlp", "none":
		cfg.Traces.Exporter = v
	case "console":
		cfg.Traces.Exporter = "stdout"
	}
	for _, v := range strings.Split(strings.ToLower(getenv("OTEL_METRICS_EXPORTER")), ",") {
		switch strings.TrimSpace(v) {
		case "otlp":
			cfg.Metrics.OTLP = true
		case "prometheus":
			cfg.Metrics.Prometheus = true
		case "none":
			cfg.Metrics.OTLP, cfg.Metrics.Prometheus = false, false
		}
	}
	if v := getenv("OTEL_TRACES_SAMPLER_ARG"); v != "" {
		if r, err := strconv.ParseFloat(v, 64); err == nil {
			cfg.Traces.SamplingRatio = &r
		}
	}

	t := &T{log: log, toolLabel: !cfg.Metrics.NoToolLabel}
	var err error
	if cfg.Audit.Path != "" || opts.AuditWriter != nil {
		if t.audit, err = openAudit(cfg.Audit, opts.AuditWriter); err != nil {
			return nil, err
		}
		t.closers = append(t.closers, func(context.Context) error { return t.audit.close() })
	}
	tracing := opts.SpanProcessor != nil || (cfg.Traces.Exporter != "" && cfg.Traces.Exporter != "none")
	metering := opts.MetricReader != nil || cfg.Metrics.Prometheus || cfg.Metrics.OTLP
	if !tracing && !metering {
		if t.audit == nil {
			return nil, nil
		}
		return t, nil
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", cfg.ServiceName),
		attribute.String("service.version", cfg.ServiceVersion),
	))
	if err != nil {
		res = resource.Default()
	}
	if tracing {
		if err := t.buildTracing(ctx, cfg, opts, getenv, res); err != nil {
			_ = t.Shutdown(ctx)
			return nil, err
		}
	}
	if metering {
		if err := t.buildMetrics(ctx, cfg, opts, res); err != nil {
			_ = t.Shutdown(ctx)
			return nil, err
		}
	}
	return t, nil
}

func (t *T) buildTracing(ctx context.Context, cfg Config, opts *Options, getenv func(string) string, res *resource.Resource) error {
	ratio := 1.0
	if cfg.Traces.SamplingRatio != nil {
		ratio = *cfg.Traces.SamplingRatio
	}
	to := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	}
	if opts.SpanProcessor != nil {
		to = append(to, sdktrace.WithSpanProcessor(opts.SpanProcessor))
	}
	switch cfg.Traces.Exporter {
	case "otlp":
		// vmcp's own OTLP/HTTP encoder (otlp.go), unless a setting only
		// the SDK's exporter implements is used.
		var exp sdktrace.SpanExporter
		if otlpSupported(getenv) {
			e, err := newOTLPExporter(cfg.Traces.Endpoint, getenv)
			if err != nil {
				return err
			}
			exp = e
		} else {
			var eo []otlptracehttp.Option
			if cfg.Traces.Endpoint != "" {
				eo = append(eo, otlptracehttp.WithEndpointURL(strings.TrimRight(cfg.Traces.Endpoint, "/")+"/v1/traces"))
			}
			e, err := otlptracehttp.New(ctx, eo...)
			if err != nil {
				return fmt.Errorf("telemetry: OTLP trace exporter: %w", err)
			}
			exp = e
		}
		b := t.newBatcher(exp, getenv)
		to = append(to, sdktrace.WithSpanProcessor(b))
		// Lean spans when vmcp's encoder writes them and no other
		// processor sees spans (it would miss the lean ones).
		if b.enc != nil && opts.SpanProcessor == nil && !opts.SDKSpans {
			t.lean, _ = newLeanTracer(res, ratio, b)
		}
	case "stdout":
		exp, err := stdouttrace.New(stdouttrace.WithWriter(os.Stderr))
		if err != nil {
			return err
		}
		to = append(to, sdktrace.WithSyncer(exp))
	case "", "none":
	default:
		return fmt.Errorf("telemetry: traces.exporter %q: want none, otlp or stdout", cfg.Traces.Exporter)
	}
	t.tp = sdktrace.NewTracerProvider(to...)
	t.closers = append(t.closers, t.tp.Shutdown)
	t.tracer = t.tp.Tracer(tracerName)
	props := []propagation.TextMapPropagator{propagation.TraceContext{}}
	if cfg.Traces.PropagateBaggage {
		props = append(props, propagation.Baggage{})
		t.baggage = true
	}
	t.prop = propagation.NewCompositeTextMapPropagator(props...)
	return nil
}

func (t *T) buildMetrics(ctx context.Context, cfg Config, opts *Options, res *resource.Resource) error {
	limit := cfg.Metrics.CardinalityLimit
	if limit <= 0 {
		limit = 2000
	}
	mo := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithCardinalityLimit(limit)}
	if opts.MetricReader != nil {
		mo = append(mo, sdkmetric.WithReader(opts.MetricReader))
	}
	if cfg.Metrics.Prometheus {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
		if err != nil {
			return fmt.Errorf("telemetry: Prometheus exporter: %w", err)
		}
		mo = append(mo, sdkmetric.WithReader(exp))
		t.prom = promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true, ErrorLog: slogPrinter{t.log}})
	}
	if cfg.Metrics.OTLP {
		var eo []otlpmetrichttp.Option
		if cfg.Metrics.OTLPEndpoint != "" {
			eo = append(eo, otlpmetrichttp.WithEndpointURL(strings.TrimRight(cfg.Metrics.OTLPEndpoint, "/")+"/v1/metrics"))
		}
		exp, err := otlpmetrichttp.New(ctx, eo...)
		if err != nil {
			return fmt.Errorf("telemetry: OTLP metric exporter: %w", err)
		}
		var ro []sdkmetric.PeriodicReaderOption
		if cfg.Metrics.OTLPInterval > 0 {
			ro = append(ro, sdkmetric.WithInterval(cfg.Metrics.OTLPInterval))
		}
		mo = append(mo, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, ro...)))
	}
	t.mp = sdkmetric.NewMeterProvider(mo...)
	t.closers = append(t.closers, t.mp.Shutdown)
	m, err := newInstruments(t.mp.Meter("github.com/vmcp-dev/vmcp"))
	if err != nil {
		return err
	}
	t.closers = append(t.closers, m.rec.close) // before mp.Shutdown: closers run last first
	t.m = m
	return nil
}

// newBatcher is the batch span processor of an exporter, warning in the
// log when spans were dropped.
func (t *T) newBatcher(exp sdktrace.SpanExporter, getenv func(string) string) *batcher {
	return newBatcher(exp, getenv, func(n int64) {
		t.log.Warn("telemetry: spans dropped, the export queue was full (OTEL_BSP_MAX_QUEUE_SIZE)", "dropped", n)
	})
}

// NewBatchSpanProcessor is the batch span processor vmcp exports spans
// with (see batcher), over any exporter (benchmarks, tests); getenv
// reads the OTEL_BSP_* variables (nil: os.Getenv).
func NewBatchSpanProcessor(exp sdktrace.SpanExporter, getenv func(string) string) sdktrace.SpanProcessor {
	if getenv == nil {
		getenv = os.Getenv
	}
	return newBatcher(exp, getenv, nil)
}

// Shutdown flushes and stops the exporters and closes the audit file.
func (t *T) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	var err error
	t.once.Do(func() {
		for i := len(t.closers) - 1; i >= 0; i-- {
			err = errors.Join(err, t.closers[i](ctx))
		}
	})
	return err
}

// ForceFlush exports what the batch processors hold (tests, shutdown).
func (t *T) ForceFlush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	var err error
	if t.tp != nil {
		err = t.tp.ForceFlush(ctx)
	}
	if t.mp != nil {
		err = errors.Join(err, t.mp.ForceFlush(ctx))
	}
	return err
}

// MetricsHandler serves the Prometheus exposition (OpenMetrics when
// asked, with exemplars); nil when Prometheus is off.
func (t *T) MetricsHandler() http.Handler {
	if t == nil {
		return nil
	}
	return t.prom
}

// Tracing reports whether spans are recorded.
func (t *T) Tracing() bool { return t != nil && t.tracer != nil }

// Meter returns vmcp's meter (observable instruments registered by the
// server), or nil when metrics are off.
func (t *T) Meter() metric.Meter {
	if t == nil || t.mp == nil {
		return nil
	}
	return t.mp.Meter("github.com/vmcp-dev/vmcp")
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Error("metrics exposition", "err", fmt.Sprint(v...)) }
