package telemetry

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// instruments are every synchronous instrument, created once.
type instruments struct {
	serverDur       metric.Float64Histogram
	clientDur       metric.Float64Histogram
	sessionDur      metric.Float64Histogram
	sessionsActive  metric.Int64UpDownCounter
	runsStarted     metric.Int64Counter
	runsFinished    metric.Int64Counter
	runSegment      metric.Float64Histogram
	stepDuration    metric.Float64Histogram
	pauses          metric.Int64Counter
	pausePersist    metric.Float64Histogram
	answers         metric.Int64Counter
	questionWait    metric.Float64Histogram
	tokenRejections metric.Int64Counter
	catalogRebuilds metric.Int64Counter
	authFailures    metric.Int64Counter
	authzDenied     metric.Int64Counter
	auditEvents     metric.Int64Counter
	auditFailures   metric.Int64Counter
	resume          metric.Float64Histogram
	stateCommit     metric.Float64Histogram
	stateTakeovers  metric.Int64Counter
	circuitChanges  metric.Int64Counter

	sets labelSets
	// rec records the request path's operation durations (deferred.go).
	rec *deferred
}

func newInstruments(m metric.Meter) (*instruments, error) {
	var (
		in  instruments
		err error
	)
	hist := func(name, desc string, buckets []float64) metric.Float64Histogram {
		if err != nil {
			return nil
		}
		var h metric.Float64Histogram
		h, err = m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(buckets...))
		return h
	}
	counter := func(name, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var c metric.Int64Counter
		c, err = m.Int64Counter(name, metric.WithDescription(desc))
		return c
	}
	updown := func(name, desc string) metric.Int64UpDownCounter {
		if err != nil {
			return nil
		}
		var c metric.Int64UpDownCounter
		c, err = m.Int64UpDownCounter(name, metric.WithDescription(desc))
		return c
	}
	in.serverDur = hist(MetricServerDuration, "MCP requests vmcp served, as its clients see them.", OperationBuckets)
	in.clientDur = hist(MetricClientDuration, "MCP requests vmcp sent to backends (and elicitations to clients).", OperationBuckets)
	in.sessionDur = hist(MetricSessionDuration, "Length of ended MCP sessions.", SessionBuckets)
	in.sessionsActive = updown(MetricSessionsActive, "Open MCP sessions.")
	in.runsStarted = counter(MetricRunsStarted, "Composite runs started.")
	in.runsFinished = counter(MetricRunsFinished, "Composite runs that reached a final status.")
	in.runSegment = hist(MetricRunSegment, "Execution time of one run segment (start or resume until pause or end); human waits excluded.", OperationBuckets)
	in.stepDuration = hist(MetricStepDuration, "Time from a tool or for_each step starting to its result (retries included), by workflow, step kind and outcome.", OperationBuckets)
	in.pauses = counter(MetricPauses, "Questions asked (runs paused), by how they travel.")
	in.pausePersist = hist(MetricPausePersist, "Time to persist a pause (the durable write before a question is sent).", PersistBuckets)
	in.answers = counter(MetricAnswers, "Answers to questions, by action and where they came from.")
	in.questionWait = hist(MetricQuestionWait, "Time from a question being asked to its answer.", WaitBuckets)
	in.tokenRejections = counter(MetricTokenRejections, "Resume tokens refused.")
	in.catalogRebuilds = counter(MetricCatalogRebuilds, "Catalogue rebuilds.")
	in.authFailures = counter(MetricAuthFailures, "Requests refused by authentication.")
	in.authzDenied = counter(MetricAuthzDenied, "Requests and composite steps refused by an authorization policy, by what was refused (tool, step_tool, prompt, resource).")
	in.auditEvents = counter(MetricAuditEvents, "Audit lines written.")
	in.auditFailures = counter(MetricAuditWriteFailures, "Audit lines that could not be written.")
	in.resume = hist(MetricResume, "Time from an answer's claim being committed to the resumed run's next backend call being dispatched.", OperationBuckets)
	in.stateCommit = hist(MetricStateCommit, "Duration of one state-store transition (its durable commit), by driver, operation and outcome (ok, refused, fenced, error).", PersistBuckets)
	in.stateTakeovers = counter(MetricStateTakeovers, "Runs taken over from a replica whose lease expired (PostgreSQL).")
	in.circuitChanges = counter(MetricCircuitTransitions, "Circuit breaker transitions per backend, by the state entered.")
	if err != nil {
		return nil, err
	}
	inFlight, err := m.Int64ObservableGauge(MetricInFlight, metric.WithDescription("MCP requests being served now."))
	if err != nil {
		return nil, err
	}
	// Every collection runs the callbacks before it reads the
	// aggregations: the deferred durations are recorded first.
	in.rec = newDeferred(&in.sets, deferDelay)
	if _, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		in.rec.drain()
		in.sets.observeFlights(o, inFlight)
		return nil
	}, inFlight); err != nil {
		_ = in.rec.close(context.Background())
		return nil, err
	}
	return &in, nil
}

func attrs(kv ...attribute.KeyValue) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(kv...))
}

// RunStarted counts a composite run that starts.
func (t *T) RunStarted(ctx context.Context, workflow string) {
	if t == nil || t.m == nil {
		return
	}
	t.m.runsStarted.Add(ctx, 1, attrs(KeyWorkflow.String(workflow)))
}

// RunFinished counts a run that reached a final status (completed,
// failed, cancelled, timed_out, abandoned).
func (t *T) RunFinished(ctx context.Context, workflow, status string) {
	if t == nil || t.m == nil {
		return
	}
	t.m.runsFinished.Add(ctx, 1, attrs(KeyWorkflow.String(workflow), KeyStatus.String(status)))
}

// Paused counts a question, by delivery (mrtr, live, paused_result).
func (t *T) Paused(ctx context.Context, workflow, delivery string) {
	if t == nil || t.m == nil {
		return
	}
	t.m.pauses.Add(ctx, 1, attrs(KeyWorkflow.String(workflow), KeyDelivery.String(delivery)))
}

// PausePersisted records the durable write of a pause.
func (t *T) PausePersisted(ctx context.Context, driver string, d time.Duration) {
	if t == nil || t.m == nil {
		return
	}
	t.m.pausePersist.Record(ctx, d.Seconds(), attrs(KeyDriver.String(driver)))
}

// Answered counts an answer (action: accept, decline, cancel, expired,
// invalid; surface: mrtr, live, tool, http, cli) and, when the question's
// age is known (wait > 0), the human latency.
func (t *T) Answered(ctx context.Context, workflow, action, surface string, wait time.Duration) {
	if t == nil || t.m == nil {
		return
	}
	t.m.answers.Add(ctx, 1, attrs(KeyWorkflow.String(workflow), KeyAction.String(action), KeySurface.String(surface)))
	if wait > 0 {
		t.m.questionWait.Record(ctx, wait.Seconds(), attrs(KeyWorkflow.String(workflow), KeyAction.String(action)))
	}
}

// TokenRejected counts a refused resume token (expired, replayed,
// tampered, wrong_owner, unknown_key).
func (t *T) TokenRejected(ctx context.Context, reason string) {
	if t == nil || t.m == nil {
		return
	}
	t.m.tokenRejections.Add(ctx, 1, attrs(KeyReason.String(reason)))
}

// CatalogRebuilt counts a catalogue rebuild (reason: startup, change).
func (t *T) CatalogRebuilt(ctx context.Context, reason string) {
	if t == nil || t.m == nil {
		return
	}
	t.m.catalogRebuilds.Add(ctx, 1, attrs(KeyReason.String(reason)))
}

// AuthFailed counts a request refused by authentication.
func (t *T) AuthFailed(ctx context.Context, reason string) {
	if t == nil || t.m == nil {
		return
	}
	t.m.authFailures.Add(ctx, 1, attrs(KeyReason.String(reason)))
}

// StepFinished records one workflow step's duration: kind is tool or
// for_each, status the step's (completed, failed, cancelled).
func (t *T) StepFinished(ctx context.Context, workflow, kind, status string, d time.Duration) {
	if t == nil || t.m == nil {
		return
	}
	t.m.stepDuration.Record(ctx, d.Seconds(), attrs(KeyWorkflow.String(workflow), KeyStepKind.String(kind), KeyStatus.String(status)))
}

// AuthzDenied counts a refusal by an authorization policy; kind is what
// was refused: tool, step_tool, prompt or resource (a bounded set).
func (t *T) AuthzDenied(ctx context.Context, kind string) {
	if t == nil || t.m == nil {
		return
	}
	t.m.authzDenied.Add(ctx, 1, attrs(KeyReason.String(kind)))
}

// Resumed records the time from an answer's claim to the resumed run's
// next backend call (driver: bbolt, postgres).
func (t *T) Resumed(ctx context.Context, driver string, d time.Duration) {
	if t == nil || t.m == nil {
		return
	}
	t.m.resume.Record(ctx, d.Seconds(), t.m.sets.small(KeyDriver.String(driver), attribute.KeyValue{}, attribute.KeyValue{})...)
}

// StateCommitted records one store transition: op is the driver method
// (create, checkpoint, pause, claim, …), outcome ok, refused (a
// transition refused by the run's state), fenced or error.
func (t *T) StateCommitted(ctx context.Context, driver, op, outcome string, d time.Duration) {
	if t == nil || t.m == nil {
		return
	}
	t.m.stateCommit.Record(ctx, d.Seconds(), t.m.sets.small(KeyDriver.String(driver), KeyOp.String(op), KeyResult.String(outcome))...)
}

// TakenOver counts runs taken over from a dead replica.
func (t *T) TakenOver(ctx context.Context, driver string, n int) {
	if t == nil || t.m == nil || n <= 0 {
		return
	}
	t.m.stateTakeovers.Add(ctx, int64(n), attrs(KeyDriver.String(driver)))
}

// CircuitChanged counts a circuit breaker transition (to: closed, open,
// half_open).
func (t *T) CircuitChanged(ctx context.Context, backend, to string) {
	if t == nil || t.m == nil {
		return
	}
	t.m.circuitChanges.Add(ctx, 1, attrs(KeyBackend.String(backend), KeyTo.String(to)))
}

// session is an open session-era (pre-2026-07-28) MCP session.
type session struct {
	start               time.Time
	protocol, transport string
}

// SessionNegotiated remembers the protocol version a session's
// initialize settled on (before the session is registered).
func (t *T) SessionNegotiated(id, protocol string) {
	if !t.tracksSessions() || id == "" {
		return
	}
	t.sessions.Store(id, &session{protocol: protocol})
}

// SessionProtocol is the negotiated version of an open session ("" if
// unknown): the mcp_protocol_version of its requests.
func (t *T) SessionProtocol(id string) string {
	if !t.tracksSessions() {
		return ""
	}
	if v, ok := t.sessions.Load(id); ok {
		return v.(*session).protocol
	}
	return ""
}

// SessionStarted counts an open session.
func (t *T) SessionStarted(ctx context.Context, id, transport string) {
	if !t.tracksSessions() {
		return
	}
	s := &session{start: time.Now(), transport: transport}
	if v, ok := t.sessions.Load(id); ok {
		s.protocol = v.(*session).protocol
	}
	t.sessions.Store(id, s)
	if t.m != nil {
		t.m.sessionsActive.Add(ctx, 1, attrs(KeyProtocolVersion.String(s.protocol), KeyTransport.String(transport)))
	}
}

// tracksSessions reports whether open sessions are kept: whenever
// telemetry is on (a nil T is off). Their protocol is a span attribute
// and a metric label of their requests, their lifetimes are metrics, and
// their end is audited (session.closed) once per session that started.
func (t *T) tracksSessions() bool { return t != nil }

// SessionEnded records a session's length; false for a session it did not
// see start.
func (t *T) SessionEnded(ctx context.Context, id string) bool {
	if !t.tracksSessions() {
		return false
	}
	v, ok := t.sessions.LoadAndDelete(id)
	if !ok || v.(*session).start.IsZero() {
		return false
	}
	if t.m == nil {
		return true
	}
	s := v.(*session)
	set := attrs(KeyProtocolVersion.String(s.protocol), KeyTransport.String(s.transport))
	t.m.sessionsActive.Add(ctx, -1, set)
	t.m.sessionDur.Record(ctx, time.Since(s.start).Seconds(), set)
	return true
}

// Gauges are the values read at collection time (the server supplies
// them). Each may be nil.
type Gauges struct {
	// Runs counts runs by status (running, waiting, interrupted); read at
	// most every RunsEvery (0: 15 s), since it reads the store.
	Runs      func(context.Context) map[string]int
	RunsEvery time.Duration
	// Replicas counts the live replicas sharing the store (-1: not
	// applicable, e.g. bbolt: no series); read with Runs' cache period.
	Replicas func(context.Context) int
	// Backends reports each backend's health.
	Backends func() []BackendState
	// CatalogTools counts the advertised tools per backend.
	CatalogTools func() map[string]int
}

// BackendState is one backend's health as the gauges show it.
type BackendState struct {
	Name string
	Up   bool
	// Circuit is closed, open or half_open ("" is closed).
	Circuit string
	// Connects counts (re)connections (stdio restarts included).
	Connects int64
}

// RegisterGauges registers the observable gauges.
func (t *T) RegisterGauges(g Gauges) error {
	if t == nil || t.mp == nil {
		return nil
	}
	m := t.Meter()
	every := g.RunsEvery
	if every <= 0 {
		every = 15 * time.Second
	}
	var (
		mu       sync.Mutex
		cached   map[string]int
		at       time.Time
		replicas = -1
		repAt    time.Time
	)
	runs, err := m.Int64ObservableGauge(MetricRuns, metric.WithDescription("Runs in the store by non-final status (every replica reports the store's value: aggregate with max)."))
	if err != nil {
		return err
	}
	up, err := m.Int64ObservableGauge(MetricBackendUp, metric.WithDescription("1 when the backend is ready, else 0."))
	if err != nil {
		return err
	}
	tools, err := m.Int64ObservableGauge(MetricCatalogTools, metric.WithDescription("Tools advertised per backend."))
	if err != nil {
		return err
	}
	circuit, err := m.Int64ObservableGauge(MetricBackendCircuit, metric.WithDescription("Circuit breaker state per backend: 1 for the current state (closed, open or half_open), 0 for the others."))
	if err != nil {
		return err
	}
	reps, err := m.Int64ObservableGauge(MetricReplicas, metric.WithDescription("Live replicas sharing the state store (PostgreSQL; every replica reports the store's value: aggregate with max)."))
	if err != nil {
		return err
	}
	connects, err := m.Int64ObservableCounter(MetricBackendConnects, metric.WithDescription("Connections made to the backend (reconnects and stdio restarts included)."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		if g.Runs != nil {
			mu.Lock()
			if cached == nil || time.Since(at) >= every {
				cached, at = g.Runs(ctx), time.Now()
			}
			for _, s := range []string{"running", "waiting", "interrupted"} {
				o.ObserveInt64(runs, int64(cached[s]), metric.WithAttributes(KeyStatus.String(s)))
			}
			mu.Unlock()
		}
		if g.Replicas != nil {
			mu.Lock()
			if repAt.IsZero() || time.Since(repAt) >= every {
				replicas, repAt = g.Replicas(ctx), time.Now()
			}
			if replicas >= 0 {
				o.ObserveInt64(reps, int64(replicas))
			}
			mu.Unlock()
		}
		if g.Backends != nil {
			b01 := func(b bool) int64 {
				if b {
					return 1
				}
				return 0
			}
			for _, b := range g.Backends() {
				name := KeyBackend.String(b.Name)
				o.ObserveInt64(up, b01(b.Up), metric.WithAttributes(name))
				cur := b.Circuit
				if cur == "" {
					cur = "closed"
				}
				for _, s := range []string{"closed", "open", "half_open"} {
					o.ObserveInt64(circuit, b01(cur == s), metric.WithAttributes(name, KeyState.String(s)))
				}
				o.ObserveInt64(connects, b.Connects, metric.WithAttributes(name))
			}
		}
		if g.CatalogTools != nil {
			for b, n := range g.CatalogTools() {
				o.ObserveInt64(tools, int64(n), metric.WithAttributes(KeyBackend.String(b)))
			}
		}
		return nil
	}, runs, up, tools, circuit, connects, reps)
	return err
}
