#!/usr/bin/env bash
# run-tests.sh — the Node.js example's tests against a throwaway cluster.
#
#   bash examples/node/run-tests.sh
#
# Expects msgbilling built and installed (scripts/test.sh does that first).
# Installs the example's dependencies with npm ci (package-lock.json),
# starts a cluster on port 5497 as the postgres OS user (socket in a scratch
# directory), runs `node --test` with the PG* variables pointing at it, and
# stops it.  Prints node's "# pass N" / "# fail N" lines; exits non-zero on
# any failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
. scripts/common.sh

# curl comes with msgbilling's packages; a node and npm installed outside
# Debian's packages will do
if command -v node >/dev/null && command -v npm >/dev/null; then
    mb_install_deps
else
    MB_PACKAGES="$MB_PACKAGES nodejs npm" mb_install_deps
fi

echo "== node $(node --version), npm $(npm --version 2>/dev/null): npm ci"
(cd "$here" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)

mb_workdir
trap mb_cleanup EXIT
mb_cluster_start 5497

out="$MB_WORK/node-test.out"
rc=0
start=$SECONDS
echo "== node --test"
(
    cd "$here"
    PGHOST="$MB_WORK" PGPORT="$MB_PORT" PGUSER=postgres PGDATABASE=postgres \
        node --test --test-reporter=tap test/*.test.js 2>&1
) | tee "$out" || rc=$?     # pipefail: node's exit status

echo "== node --test took $((SECONDS - start)) s"
pass=$(sed -n 's/^# pass \([0-9][0-9]*\)$/\1/p' "$out" | tail -n 1)
fail=$(sed -n 's/^# fail \([0-9][0-9]*\)$/\1/p' "$out" | tail -n 1)
if [ -z "$pass" ] || [ -z "$fail" ]; then
    echo "node --test printed no totals (exit $rc)"
    tail -n 50 "$MB_WORK/server.log" 2>/dev/null || true
    exit 1
fi
if [ "$rc" -ne 0 ] || [ "$fail" -ne 0 ]; then
    tail -n 50 "$MB_WORK/server.log" 2>/dev/null || true
    [ "$rc" -ne 0 ] || rc=1
    exit "$rc"
fi
[ "$pass" -gt 0 ]
