package telemetry

import "go.opentelemetry.io/otel/attribute"

// Attribute keys (MCP and GenAI semantic conventions, status Development;
// vmcp's own under "vmcp."). Defined here once: nothing else spells them.
const (
	KeyMethod          = attribute.Key("mcp.method.name")
	KeyToolName        = attribute.Key("gen_ai.tool.name")
	KeyPromptName      = attribute.Key("gen_ai.prompt.name")
	KeyOperationName   = attribute.Key("gen_ai.operation.name")
	KeyWorkflowName    = attribute.Key("gen_ai.workflow.name")
	KeyErrorType       = attribute.Key("error.type")
	KeyRequestID       = attribute.Key("jsonrpc.request.id")
	KeyProtocolVersion = attribute.Key("mcp.protocol.version")
	KeySessionID       = attribute.Key("mcp.session.id")
	KeyTransport       = attribute.Key("network.transport")
	KeyServerAddress   = attribute.Key("server.address")
	KeyClientAddress   = attribute.Key("client.address")
	KeyRunID           = attribute.Key("vmcp.run.id")
	KeyRunStatus       = attribute.Key("vmcp.run.status")
	KeyStepID          = attribute.Key("vmcp.step.id")
	KeyStepAttempt     = attribute.Key("vmcp.step.attempt")
	KeyBackend         = attribute.Key("vmcp.backend")
	KeyOutcome         = attribute.Key("vmcp.outcome")

	// Metric-only label keys (bounded sets).
	KeyWorkflow = attribute.Key("workflow")
	KeyStatus   = attribute.Key("status")
	KeyDelivery = attribute.Key("delivery")
	KeyAction   = attribute.Key("action")
	KeySurface  = attribute.Key("surface")
	KeyReason   = attribute.Key("reason")
	KeyDriver   = attribute.Key("driver")
	KeyEvent    = attribute.Key("event")
	KeyState    = attribute.Key("state")
	KeyStepKind = attribute.Key("step_kind")
	KeyOp       = attribute.Key("op")
	KeyTo       = attribute.Key("to")
	// KeyResult is the metric label "outcome" (ok, refused, fenced, error).
	KeyResult = attribute.Key("outcome")
)

// Metric (OTel instrument) names; the Prometheus exporter turns the dots
// into underscores and appends the unit (_seconds) and _total.
const (
	MetricServerDuration     = "mcp.server.operation.duration"
	MetricClientDuration     = "mcp.client.operation.duration"
	MetricInFlight           = "vmcp.requests.in_flight"
	MetricSessionDuration    = "mcp.server.session.duration"
	MetricSessionsActive     = "vmcp.sessions.active"
	MetricRunsStarted        = "vmcp.runs.started"
	MetricRunsFinished       = "vmcp.runs.finished"
	MetricRuns               = "vmcp.runs"
	MetricRunSegment         = "vmcp.run.execution"
	MetricStepDuration       = "vmcp.step.duration"
	MetricPauses             = "vmcp.pauses"
	MetricPausePersist       = "vmcp.pause.persist"
	MetricAnswers            = "vmcp.answers"
	MetricQuestionWait       = "vmcp.question.wait"
	MetricTokenRejections    = "vmcp.resume_token.rejections"
	MetricBackendUp          = "vmcp.backend.up"
	MetricBackendCircuit     = "vmcp.backend.circuit_state"
	MetricBackendConnects    = "vmcp.backend.connects"
	MetricCatalogTools       = "vmcp.catalog.tools"
	MetricCatalogRebuilds    = "vmcp.catalog.rebuilds"
	MetricAuthFailures       = "vmcp.auth.failures"
	MetricAuthzDenied        = "vmcp.authz.denied"
	MetricAuditEvents        = "vmcp.audit.events"
	MetricAuditWriteFailures = "vmcp.audit.write_failures"
	MetricResume             = "vmcp.resume"
	MetricStateCommit        = "vmcp.state.commit"
	MetricStateTakeovers     = "vmcp.state.takeovers"
	MetricReplicas           = "vmcp.replicas"
	MetricCircuitTransitions = "vmcp.backend.circuit_transitions"
)

// Error types (error.type): JSON-RPC codes as strings, plus these.
const (
	ErrToolError    = "tool_error"
	ErrTimeout      = "timeout"
	ErrCanceled     = "canceled"
	ErrUnauthorized = "unauthorized"
	ErrUnavailable  = "unavailable"
	ErrInternal     = "-32603"
	// OtherTool replaces a tool name that is not advertised (an unknown
	// name must not become a label value).
	OtherTool = "_OTHER"
)

// OperationBuckets are the operation histograms' bounds in seconds: they
// start at 100 µs because a gateway's own cost is microseconds (the
// semconv set starts at 10 ms).
var OperationBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// SessionBuckets bound session and run-segment durations (1 s … 1 day).
var SessionBuckets = []float64{1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400}

// WaitBuckets bound human latency: 1 s … 7 days.
var WaitBuckets = []float64{1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400}

// PersistBuckets bound a durable write (µs … s).
var PersistBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}
