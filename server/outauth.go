package server

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/vmcp-dev/vmcp/backends/outauth"
	"github.com/vmcp-dev/vmcp/dsl"
)

// outgoingAuth builds each backend's outgoing credentials
// (`outgoing_auth`), reading the secrets it names (value_env, value_file,
// client_secret_env, client_secret_file). Errors name the position and
// the backend, never a secret.
//
// The default applies to url backends; stdio and builtin backends take no
// headers, so for them only a default of `error` counts (it refuses them),
// and a per-backend entry that sends credentials is an error. A missing
// outgoing_auth means none (as before it existed).
func outgoingAuth(cfg *dsl.Config, log *slog.Logger) (map[string]*outauth.Strategy, error) {
	out := map[string]*outauth.Strategy{}
	oa := &cfg.OutgoingAuth
	for _, b := range cfg.Backends {
		name := b.Name.Value
		st, explicit := oa.Backends[name]
		if !explicit || st == nil {
			st, explicit = &oa.Default, false
		}
		typ := st.Type.Value
		if typ == "" {
			typ = outauth.None
		}
		field := "outgoing_auth.default"
		if explicit {
			field = "outgoing_auth.backends." + name
		}
		where := fmt.Sprintf("%s: %s", cfg.Src.NodePos(st.Node), field)
		sends := typ != outauth.None && typ != outauth.Refuse
		if b.Kind() != dsl.BackendURL && sends {
			if !explicit {
				continue // the default's headers do not apply here
			}
			return nil, fmt.Errorf("%s: backend %q is a %s backend, and type %s sends HTTP headers: only url backends take them (give a stdio backend its secrets with env)", where, name, b.Kind(), typ)
		}
		if (typ == outauth.TokenExchange || typ == outauth.PassThrough) && cfg.IncomingAuth.Type.Value != dsl.AuthTokens && cfg.IncomingAuth.Type.Value != dsl.AuthOIDC {
			return nil, fmt.Errorf("%s: type %s for backend %q needs callers' tokens: set incoming_auth to tokens or oidc", where, typ, name)
		}
		c, err := strategyConfig(cfg, name, st, field)
		if err != nil {
			return nil, err
		}
		if st.Service != nil {
			if typ != outauth.TokenExchange && typ != outauth.PassThrough {
				return nil, fmt.Errorf("%s: %s.service: only token_exchange and pass_through take service credentials (the others use theirs for everything)", cfg.Src.NodePos(st.Service.Node), field)
			}
			svc, err := strategyConfig(cfg, name, st.Service, field+".service")
			if err != nil {
				return nil, err
			}
			c.Service = &svc
		}
		s, err := outauth.New(c, &outauth.Options{Logger: log})
		if err != nil {
			return nil, fmt.Errorf("%s: %v", cfg.Src.NodePos(st.Node), err)
		}
		out[name] = s
	}
	return out, nil
}

// strategyConfig converts one strategy, reading its secrets.
func strategyConfig(cfg *dsl.Config, name string, st *dsl.AuthStrategy, field string) (outauth.Config, error) {
	c := outauth.Config{Backend: name, Type: st.Type.Value, TokenURL: st.TokenURL.Value, Audience: st.Audience.Value, ClientID: st.ClientID.Value}
	if c.Type == "" {
		c.Type = outauth.None
	}
	for _, s := range st.Scopes {
		c.Scopes = append(c.Scopes, s.Value)
	}
	if len(st.Headers) > 0 {
		c.Headers = map[string]outauth.Secret{}
	}
	for h, v := range st.Headers {
		val, err := secretValue(v.Value, v.ValueEnv, v.ValueFile)
		if err != nil {
			return c, fmt.Errorf("%s: %s.headers.%s: %v", cfg.Src.NodePos(v.Node), field, h, err)
		}
		c.Headers[h] = val
	}
	if st.ClientSecretEnv.Set || st.ClientSecretFile.Set {
		val, err := secretValue(dsl.String{}, st.ClientSecretEnv, st.ClientSecretFile)
		if err != nil {
			return c, fmt.Errorf("%s: %s: client secret: %v", cfg.Src.NodePos(st.Node), field, err)
		}
		c.ClientSecret = val
	}
	return c, nil
}

// secretValue reads a literal, an environment variable or a file (trimmed).
// Errors name the variable or the file, never the value.
func secretValue(lit, env, file dsl.String) (outauth.Secret, error) {
	switch {
	case env.Set:
		v, ok := os.LookupEnv(env.Value)
		if !ok || v == "" {
			return "", fmt.Errorf("environment variable %s is not set", env.Value)
		}
		return outauth.Secret(v), nil
	case file.Set:
		b, err := os.ReadFile(file.Value)
		if err != nil {
			return "", fmt.Errorf("reading %s: %v", file.Value, unwrapPath(err))
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%s is empty", file.Value)
		}
		return outauth.Secret(v), nil
	case lit.Set:
		return outauth.Secret(lit.Value), nil
	}
	return "", fmt.Errorf("no value")
}

// unwrapPath drops the path from an *os.PathError (the message names it).
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
