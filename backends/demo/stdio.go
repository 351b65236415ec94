package demo

import (
	"context"
	"errors"
	"io"
	"log"

	"github.com/mark3labs/mcp-go/server"
)

// ServeStdio serves the named demo backend as an MCP server speaking
// newline-delimited JSON-RPC on in and out (mcp-go's stdio transport),
// until in reaches EOF (nil) or ctx is cancelled (nil as well: stopping is
// the normal way to end). `vmcp demo-backend NAME` runs it on the process's
// stdin and stdout.
//
// mcp-go keeps the stdio session in a package variable, so only one
// ServeStdio should run per process at a time: two would share where
// server-initiated messages go (the demo servers send none, but still).
func ServeStdio(ctx context.Context, name string, in io.Reader, out io.Writer) error {
	srv, err := New(name)
	if err != nil {
		return err
	}
	s := server.NewStdioServer(srv)
	// Listen returns what it logs; keep stderr for the caller.
	s.SetErrorLogger(log.New(io.Discard, "", 0))
	err = s.Listen(ctx, in, out)
	if ctx.Err() != nil && (err == nil || errors.Is(err, ctx.Err())) {
		return nil
	}
	return err
}
