#!/usr/bin/env bash
# A private PostgreSQL for the tests, from the server installed on the
# machine (initdb, pg_ctl): a new cluster in a temporary directory,
# listening on a free 127.0.0.1 port and a socket in that directory only.
# Tests never depend on a server someone else started.
#
#   pg_env=$(.ci/postgres.sh start) && eval "$pg_env"   # exports VMCP_TEST_POSTGRES_DSN and VMCP_TEST_POSTGRES_DIR
#   .ci/postgres.sh stop "$VMCP_TEST_POSTGRES_DIR"
#
# PostgreSQL refuses to run as root; as root the cluster belongs to the
# postgres user (or nobody) and its programs run through runuser.
set -euo pipefail

find_pg() {
	if command -v "$1" >/dev/null 2>&1; then command -v "$1"; return; fi
	for c in /usr/local/bin/"$1" /usr/lib/postgresql/*/bin/"$1"; do
		if [ -x "$c" ]; then echo "$c"; return; fi
	done
	echo "ci: error: $1 not found (install PostgreSQL: apt-get install postgresql)" >&2
	exit 1
}

as_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		# From /: the caller's directory may be closed to that user.
		(cd / && runuser -u "$PGUSER_RUN" -- "$@")
	else
		"$@"
	fi
}

PGUSER_RUN=""
if [ "$(id -u)" -eq 0 ]; then
	for u in postgres nobody; do
		if id "$u" >/dev/null 2>&1; then PGUSER_RUN=$u; break; fi
	done
	if [ -z "$PGUSER_RUN" ]; then
		echo "ci: error: running as root and there is no postgres or nobody user to run PostgreSQL as" >&2
		exit 1
	fi
fi

case "${1:-}" in
start)
	INITDB=$(find_pg initdb)
	PGCTL=$(find_pg pg_ctl)
	dir=$(mktemp -d /tmp/vmcp-ci-pg.XXXXXX)
	if [ -n "$PGUSER_RUN" ]; then chown "$PGUSER_RUN" "$dir"; fi
	chmod 700 "$dir"
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + RANDOM % 20000)))
	as_owner "$INITDB" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; rm -rf "$dir"; exit 1; }
	if ! as_owner "$PGCTL" start -w -t 60 -D "$dir/data" -l "$dir/log" \
		-o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300" >/dev/null; then
		cat "$dir/log" >&2
		as_owner "$PGCTL" stop -m immediate -D "$dir/data" >/dev/null 2>&1 || true
		rm -rf "$dir"
		exit 1
	fi
	echo "export VMCP_TEST_POSTGRES_DSN='postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable'"
	echo "export VMCP_TEST_POSTGRES_DIR='$dir'"
	;;
stop)
	dir=${2:-${VMCP_TEST_POSTGRES_DIR:-}}
	if [ -z "$dir" ] || [ ! -d "$dir/data" ]; then
		echo "ci: postgres.sh stop: no cluster directory given" >&2
		exit 1
	fi
	PGCTL=$(find_pg pg_ctl)
	as_owner "$PGCTL" stop -w -m fast -D "$dir/data" >/dev/null || true
	rm -rf "$dir"
	;;
*)
	echo "usage: $0 start | stop DIR" >&2
	exit 2
	;;
esac
