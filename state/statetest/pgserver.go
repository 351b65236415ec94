package statetest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// DSNEnv names the environment variable with the PostgreSQL server the
// tests use. When it is unset, tests start a private server (see
// StartPostgres) — except in CI (CI=true), where they fail: CI starts one
// server (.ci/postgres.sh) and exports it.
const DSNEnv = "VMCP_TEST_POSTGRES_DSN"

// PostgresMain is TestMain for a package whose tests need PostgreSQL: it
// runs m, then stops the private server PostgresDSN may have started.
func PostgresMain(m *testing.M) {
	code := m.Run()
	StopPrivatePostgres()
	os.Exit(code)
}

// StopPrivatePostgres stops the private server PostgresDSN started, if
// any (for a TestMain that does more than PostgresMain).
func StopPrivatePostgres() {
	private.Lock()
	defer private.Unlock()
	if private.srv != nil {
		if err := private.srv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		private.srv = nil
	}
}

var private struct {
	sync.Mutex
	srv *Postgres
	err error
}

// PostgresDSN is the DSN of the tests' PostgreSQL server: DSNEnv when set;
// in CI (CI=true) without it, the test fails (it never skips); otherwise
// a private server this test binary starts on first use (stopped by
// PostgresMain, which the package's TestMain must call).
func PostgresDSN(t testing.TB) string {
	t.Helper()
	if dsn := os.Getenv(DSNEnv); dsn != "" {
		return dsn
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not set: in CI the PostgreSQL tests need the server .ci/postgres.sh starts (they never skip)", DSNEnv)
	}
	private.Lock()
	defer private.Unlock()
	if private.srv == nil && private.err == nil {
		private.srv, private.err = StartPostgres()
	}
	if private.err != nil {
		t.Fatalf("starting a private PostgreSQL for the tests (set %s to use another server): %v", DSNEnv, private.err)
	}
	return private.srv.DSN
}

// Postgres is a private PostgreSQL server in a temporary directory.
type Postgres struct {
	DSN  string
	Dir  string
	user string // run the server's programs as this user ("" = as we are)
}

// StartPostgres starts a private PostgreSQL server from the binaries on
// PATH (initdb, pg_ctl; also /usr/local/bin and /usr/lib/postgresql/*/bin):
// initdb into a new temporary directory, listening on a free loopback port
// and a socket in that directory only. PostgreSQL refuses to run as root;
// as root, the server runs as the "postgres" user (or "nobody"), which
// owns the directory.
func StartPostgres() (*Postgres, error) {
	initdb, err := findPG("initdb")
	if err != nil {
		return nil, err
	}
	pgctl, err := findPG("pg_ctl")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "vmcp-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{Dir: dir}
	if os.Geteuid() == 0 {
		for _, name := range []string{"postgres", "nobody"} {
			u, err := user.Lookup(name)
			if err != nil {
				continue
			}
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			if err := os.Chown(dir, uid, gid); err != nil {
				return nil, err
			}
			if err := os.Chmod(dir, 0o700); err != nil {
				return nil, err
			}
			p.user = name
			break
		}
		if p.user == "" {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root and there is no postgres or nobody user to run PostgreSQL as")
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := p.run(initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=200", port, dir)
	if out, err := p.run(pgctl, "start", "-w", "-t", "60", "-D", data, "-l", filepath.Join(dir, "log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	p.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	return p, nil
}

// Stop stops the server (fast shutdown) and removes its directory.
func (p *Postgres) Stop() error {
	pgctl, err := findPG("pg_ctl")
	if err != nil {
		return err
	}
	out, err := p.run(pgctl, "stop", "-w", "-m", "fast", "-D", filepath.Join(p.Dir, "data"))
	os.RemoveAll(p.Dir)
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v\n%s", err, out)
	}
	return nil
}

func (p *Postgres) run(prog string, args ...string) ([]byte, error) {
	var cmd *exec.Cmd
	if p.user != "" {
		cmd = exec.Command("runuser", append([]string{"-u", p.user, "--", prog}, args...)...)
	} else {
		cmd = exec.Command(prog, args...)
	}
	cmd.Dir = p.Dir
	return cmd.CombinedOutput()
}

func findPG(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	cands := []string{filepath.Join("/usr/local/bin", name)}
	more, _ := filepath.Glob(filepath.Join("/usr/lib/postgresql/*/bin", name))
	cands = append(cands, more...)
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("%s not found (PATH, /usr/local/bin, /usr/lib/postgresql/*/bin): install PostgreSQL or set %s", name, DSNEnv)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// SchemaName turns a test name into a schema name of its own.
func SchemaName(t testing.TB) string {
	n := strings.ToLower(t.Name())
	b := []byte("t_")
	for i := 0; i < len(n) && len(b) < 40; i++ {
		c := n[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b = append(b, c)
		} else {
			b = append(b, '_')
		}
	}
	var r [4]byte
	for i := range r {
		r[i] = "abcdefghijklmnopqrstuvwxyz"[randIntn(26)]
	}
	return string(append(append(b, '_'), r[:]...))
}
