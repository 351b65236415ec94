package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/server"
)

// defaultConfig is the config file used when none is named.
const defaultConfig = "vmcp.yaml"

func newServeCmd(stderr io.Writer) *cobra.Command {
	var (
		configFile string
		listen     string
		stdio      bool
		statePath  string
		logLevel   string
	)
	cmd := &cobra.Command{
		Use:   "serve [--config FILE] [--listen ADDR] [--stdio] [--state PATH]",
		Short: "Serve the gateway (with no config and no ./vmcp.yaml: the embedded demo)",
		Long: `serve loads the config (--config, else ./vmcp.yaml if present, else the
embedded demo: the in-process demo backends and the workflows of workflows/),
connects the backends, compiles every workflow against their tools, and serves
MCP on --listen (http://ADDR/mcp, plus /healthz, /readyz, /status and
/api/v1/runs) or on stdin/stdout with --stdio. SIGINT or SIGTERM shut it down
gracefully: in-flight calls finish or are cancelled, backend processes are
reaped.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, source, err := loadServeConfig(configFile, stderr)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("listen") && cfg.Listen.Value != "" {
				listen = cfg.Listen.Value
			}
			if !cmd.Flags().Changed("state") && cfg.State.Path.Value != "" {
				statePath = cfg.State.Path.Value
			}
			level := slog.LevelInfo
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usageErrorf("--log-level: %v", err)
			}
			log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
			if !stdio {
				if err := checkListen(listen, cfg); err != nil {
					return err
				}
			}

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// VMCP_DISABLE_RAW_CALLS=1 sends every backend tool call
			// through mcp-go's client (diagnosis, benchmarks; docs/gateway.md).
			g, err := server.New(cfg, &server.Options{Logger: log, Version: version, StatePath: statePath,
				DisableRawCalls: os.Getenv("VMCP_DISABLE_RAW_CALLS") == "1"})
			if err != nil {
				return err
			}
			if err := g.Start(ctx); err != nil {
				return fmt.Errorf("starting %s:\n%w", source, err)
			}
			defer func() {
				if err := g.Close(); err != nil {
					log.Warn("closing backends", "err", err)
				}
			}()
			st := g.Status()
			if stdio {
				log.Info("serving MCP on stdin/stdout", "config", source, "tools", st.Tools, "composite_tools", st.Composites)
				err := g.ServeStdio(ctx, cmd.InOrStdin(), cmd.OutOrStdout())
				if err != nil && !errors.Is(err, context.Canceled) {
					return err
				}
				return nil
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen %s: %w", listen, err)
			}
			srv := &http.Server{Handler: g.Handler(), ReadHeaderTimeout: 10 * time.Second}
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			log.Info("serving MCP", "url", "http://"+ln.Addr().String()+"/mcp", "config", source, "tools", st.Tools, "composite_tools", st.Composites)
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			log.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				_ = srv.Close()
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "config file (default ./vmcp.yaml if present, else the embedded demo)")
	f.StringVar(&listen, "listen", "127.0.0.1:4483", "HTTP listen address for /mcp and the API")
	f.BoolVar(&stdio, "stdio", false, "serve MCP on stdin/stdout instead of HTTP")
	f.StringVar(&statePath, "state", ".vmcp/state.db", "bbolt state file (created if missing)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

// loadServeConfig loads --config, ./vmcp.yaml, or the embedded demo, and
// reports every problem.
func loadServeConfig(configFile string, stderr io.Writer) (*dsl.Config, string, error) {
	dl, _ := dsl.NewLoader()
	var (
		cfg    *dsl.Config
		ds     dsl.Diagnostics
		source string
	)
	if configFile == "" && fileExists(defaultConfig) {
		configFile = defaultConfig
	}
	switch {
	case configFile != "":
		source = configFile
		if dl != nil {
			cfg, ds = dl.LoadConfigFile(configFile)
		} else {
			cfg, ds = dsl.LoadConfigFile(configFile)
		}
	default:
		source = "the embedded demo"
		cfg, ds = server.DemoConfig(dl)
	}
	if len(ds) > 0 {
		ds.Render(stderr)
		fmt.Fprintf(stderr, "%d %s\n", len(ds), plural(len(ds), "error", "errors"))
		return nil, "", errReported
	}
	return cfg, source, nil
}

// checkListen refuses to serve without authentication on a non-loopback
// address unless the config says so explicitly.
func checkListen(addr string, cfg *dsl.Config) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usageErrorf("--listen %q: %v", addr, err)
	}
	anonymous := cfg.IncomingAuth.Type.Value == "" || cfg.IncomingAuth.Type.Value == "anonymous"
	if !anonymous || isLoopback(host) || cfg.IncomingAuth.AllowAnonymousNonLoopback.Value {
		return nil
	}
	return fmt.Errorf("refusing to serve %s without authentication: it is not a loopback address. Configure incoming_auth, listen on 127.0.0.1, or set incoming_auth.allow_anonymous_non_loopback: true", addr)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}
