package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// validate --config reports a policy that does not compile at its
// file:line:col (server.New refuses it the same way: server/authz_test.go).
func TestValidateReportsPolicyErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "vmcp.yaml")
	src := `name: authz
backends:
  - {name: logs, builtin: logs}
authz:
  policies:
    - allow: "'sre' in principal.groups"
    - deny: "tool.startsWith(1)"
`
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs := vmcp(t, "validate", "--config", cfg, "--offline")
	if code != exitFailure {
		t.Fatalf("exit %d; want 1; stderr:\n%s", code, errs)
	}
	want := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(cfg) + `:7:\d+: authz\.policies\[1\]\.deny: startsWith\(\) cannot be called with int`)
	if !want.MatchString(errs) {
		t.Fatalf("stderr does not match %s:\n%s", want, errs)
	}
}
