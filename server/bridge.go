package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// The bridge relays what a backend asks during a tool call (elicitation,
// sampling, roots) to a 2026-07-28 client, which has no server-initiated
// requests: the question goes back as an input_required result, and the
// client's retry carries the answer.
//
// For such a client the backend call runs on its own goroutine, detached
// from the HTTP request that started it. When the backend asks, the tool
// handler returns input_required with the question (ids "q1", "q2", …)
// and a requestState naming the call ("relay:" + 128 random bits, held in
// memory only); the backend's request stays open. The retry hands each
// answer to the backend request waiting for it and waits again, for the
// result or the next question. A call nobody comes back to is cancelled
// after relayWait, and a retry for it then gets a clear error.
//
// Backend calls of plain tools only: a composite's steps run inside a
// durable run, whose own questions are elicitation steps (docs/gateway.md).
// 2025-11-25 clients keep the live relay (relay.go): mcp-go sends the
// request on their session.
type bridge struct {
	mu    sync.Mutex
	calls map[string]*bridgeCall
}

const relayStatePrefix = "relay:"

// Backend calls waiting for their clients hold a goroutine and an open
// backend request each, up to relayWait: bounded overall and per principal.
const (
	maxWaitingCalls        = 1000
	maxWaitingPerPrincipal = 50
)

// waitingOf counts the calls owner has waiting (b.mu held).
func (b *bridge) waitingOf(owner string) int {
	n := 0
	for _, c := range b.calls {
		if c.owner == owner {
			n++
		}
	}
	return n
}

// bridgeCall is one backend call waiting on its client.
type bridgeCall struct {
	id    string
	tool  string
	owner string
	asks  chan *bridgeAsk
	done  chan bridgeDone // buffered: the call's goroutine never blocks

	cancel context.CancelFunc
	// pending are the questions sent with the last input_required, by id;
	// only the handler goroutine serving this call touches it.
	pending map[string]*bridgeAsk
	expiry  *time.Timer
	n       int
}

type bridgeDone struct {
	res *mcp.CallToolResult
	err error
}

// bridgeAsk is one backend request waiting for the client's answer.
type bridgeAsk struct {
	method mcp.MCPMethod
	elicit mcp.ElicitationParams
	sample mcp.CreateMessageParams
	answer chan mcp.InputResponse // buffered 1
}

type bridgeKey struct{}

func newBridge() *bridge { return &bridge{calls: map[string]*bridgeCall{}} }

// bridged reports whether a plain tool call goes through the bridge: a
// retry carrying a relay requestState, or a 2026-07-28 client that
// declared a capability a backend could ask for.
func bridged(ctx context.Context, req mcp.CallToolRequest) bool {
	if strings.HasPrefix(req.Params.RequestState, relayStatePrefix) {
		return true
	}
	caps, modern := clientCaps(ctx)
	return modern && (caps.Elicitation != nil || caps.Sampling != nil || caps.Roots != nil)
}

// call serves a plain tool call through the bridge: a new call starts run
// on its own goroutine; a retry answers the questions it was sent.
func (b *bridge) call(ctx context.Context, tool string, req mcp.CallToolRequest, run func(context.Context) (*mcp.CallToolResult, error)) (*mcp.CallToolResult, error) {
	if st := req.Params.RequestState; strings.HasPrefix(st, relayStatePrefix) {
		c, err := b.resume(ctx, st, tool, req.Params.InputResponses)
		if err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		return b.wait(ctx, c)
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	c := &bridgeCall{id: relayStatePrefix + hex.EncodeToString(raw[:]), tool: tool, owner: principal(ctx),
		asks: make(chan *bridgeAsk), done: make(chan bridgeDone, 1)}
	cctx, cancel := context.WithCancel(context.WithValue(context.WithoutCancel(ctx), bridgeKey{}, c))
	c.cancel = cancel
	go func() {
		defer cancel()
		defer func() {
			if v := recover(); v != nil { // the tool handler's recovery does not reach here
				c.done <- bridgeDone{nil, fmt.Errorf("internal error: panic: %v", v)}
			}
		}()
		res, err := run(cctx)
		c.done <- bridgeDone{res, err}
	}()
	return b.wait(ctx, c)
}

// resume takes a waiting call back and answers its questions.
func (b *bridge) resume(ctx context.Context, state, tool string, responses mcp.InputResponses) (*bridgeCall, error) {
	b.mu.Lock()
	c := b.calls[state]
	if c == nil || c.tool != tool || c.owner != principal(ctx) {
		b.mu.Unlock()
		return nil, errors.New("this requestState names no backend question waiting for you (it was answered already, it expired, or vmcp restarted): call the tool again")
	}
	// Check every answer before handing any over, so that a bad retry
	// leaves the call waiting for a good one.
	for id, a := range c.pending {
		r, ok := responses[id]
		if !ok {
			b.mu.Unlock()
			return nil, fmt.Errorf("inputResponses has no answer for %q (the backend's %s)", id, a.method)
		}
		if err := checkAnswer(a.method, &r); err != nil {
			b.mu.Unlock()
			return nil, fmt.Errorf("inputResponses[%q]: %v", id, err)
		}
		responses[id] = r
	}
	delete(b.calls, state)
	b.mu.Unlock()
	c.expiry.Stop()
	for id, a := range c.pending {
		a.answer <- responses[id]
	}
	c.pending = nil
	return c, nil
}

// checkAnswer decodes a client's answer for the request it answers and
// checks its shape (the backend checks the content against its own
// schema).
func checkAnswer(method mcp.MCPMethod, r *mcp.InputResponse) error {
	if err := r.DecodeFor(method); err != nil {
		return err
	}
	switch method {
	case mcp.MethodElicitationCreate:
		if r.Elicitation == nil {
			return errors.New("missing elicitation result")
		}
		switch r.Elicitation.Action {
		case mcp.ElicitationResponseActionAccept, mcp.ElicitationResponseActionDecline, mcp.ElicitationResponseActionCancel:
		default:
			return fmt.Errorf("action %q is not accept, decline or cancel", r.Elicitation.Action)
		}
	case mcp.MethodSamplingCreateMessage:
		if r.Sampling == nil {
			return errors.New("missing sampling result")
		}
	case mcp.MethodListRoots:
		if r.Roots == nil {
			return errors.New("missing roots result")
		}
	}
	return nil
}

// wait returns the call's result, or its next questions as input_required.
func (b *bridge) wait(ctx context.Context, c *bridgeCall) (*mcp.CallToolResult, error) {
	select {
	case d := <-c.done:
		return d.res, d.err
	case <-ctx.Done():
		c.cancel()
		return nil, ctx.Err()
	case a := <-c.asks:
		asks := []*bridgeAsk{a}
		for more := true; more; {
			select {
			case a := <-c.asks:
				asks = append(asks, a)
			default:
				more = false
			}
		}
		ir := mcpserver.NewInputRequestBuilder(c.id)
		c.pending = make(map[string]*bridgeAsk, len(asks))
		for _, a := range asks {
			c.n++
			id := "q" + strconv.Itoa(c.n)
			c.pending[id] = a
			switch a.method {
			case mcp.MethodElicitationCreate:
				ir.Elicit(id, a.elicit)
			case mcp.MethodSamplingCreateMessage:
				ir.Sample(id, a.sample)
			default:
				ir.Roots(id)
			}
		}
		b.mu.Lock()
		if len(b.calls) >= maxWaitingCalls || b.waitingOf(c.owner) >= maxWaitingPerPrincipal {
			b.mu.Unlock()
			c.cancel()
			return mcp.NewToolResultError(fmt.Sprintf("too many backend questions are waiting for answers (at most %d, %d per principal): answer or abandon some first", maxWaitingCalls, maxWaitingPerPrincipal)), nil
		}
		c.expiry = time.AfterFunc(relayWait, func() {
			b.mu.Lock()
			if b.calls[c.id] == c {
				delete(b.calls, c.id)
				c.cancel()
			}
			b.mu.Unlock()
		})
		b.calls[c.id] = c
		b.mu.Unlock()
		return ir.ToolResult(), nil
	}
}

// ask is the backend side: hand the request to the client's call and wait
// for its answer.
func (c *bridgeCall) ask(ctx context.Context, a *bridgeAsk) (mcp.InputResponse, error) {
	a.answer = make(chan mcp.InputResponse, 1)
	select {
	case c.asks <- a:
	case <-ctx.Done():
		return mcp.InputResponse{}, ctx.Err()
	}
	select {
	case r := <-a.answer:
		return r, nil
	case <-ctx.Done():
		return mcp.InputResponse{}, ctx.Err()
	}
}

// bridgeOf returns the bridged call a backend request belongs to.
func bridgeOf(ctx context.Context) *bridgeCall {
	c, _ := ctx.Value(bridgeKey{}).(*bridgeCall)
	return c
}

// close cancels the calls still waiting for their clients (shutdown).
func (b *bridge) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, c := range b.calls {
		c.expiry.Stop()
		c.cancel()
		delete(b.calls, id)
	}
}
