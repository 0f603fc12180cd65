#!/usr/bin/env bash
# test-exporter.sh — msgbilling.metrics through Debian's
# prometheus-postgres-exporter with examples/monitoring/queries.yaml.
#
#   bash examples/monitoring/test-exporter.sh
#
# Expects msgbilling built and installed (scripts/test.sh does that first)
# and the packages prometheus-postgres-exporter and curl (scripts/common.sh
# installs them).  Starts a throwaway cluster on port 5498, creates the
# extension, attaches a messages table and bills some of it, then starts the
# exporter on 127.0.0.1 (a free port) as a pg_monitor role over the unix
# socket, reads /metrics with curl and checks the msgbilling_* series.
# Prints "N passed, N failed"; exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
. scripts/common.sh

EXPORTER=${EXPORTER:-prometheus-postgres-exporter}
QUERIES="$here/queries.yaml"

passed=0
failed=0
exporter_pid=""

ok() { passed=$((passed + 1)); echo "ok - $*"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $*"; }

finish() {
    if [ -n "$exporter_pid" ]; then
        kill "$exporter_pid" 2>/dev/null || true
        wait "$exporter_pid" 2>/dev/null || true
    fi
    mb_cleanup
}

for tool in "$EXPORTER" curl; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool not found: install prometheus-postgres-exporter and curl (scripts/common.sh)"
        echo "0 passed, 1 failed"
        exit 1
    fi
done

mb_workdir
trap finish EXIT
mb_cluster_start 5498
start=$SECONDS

psql_pg() {
    as_pg env PGOPTIONS='-c client_min_messages=warning' \
        "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d postgres "$@"
}

# --- the database: extension, metrics, an attached table, some billing ---
psql_pg -c 'CREATE EXTENSION msgbilling'
psql_pg >/dev/null <<'SQL'
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    content text,
    model text,
    tokens_used integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- three messages the old system already charged: legacy after attach
INSERT INTO messages (org_id, content, tokens_used)
SELECT 'a0000000-0000-4000-8000-00000000000a', 'old', 100 FROM generate_series(1, 3);
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.001, '2000-01-01');
SELECT msgbilling.top_up('a0000000-0000-4000-8000-00000000000a', 100);
SELECT msgbilling.top_up('b0000000-0000-4000-8000-00000000000b', 1);
-- A: five charged (1 credit each), one of them refunded;
-- B: one charged, two failed (insufficient_credits)
INSERT INTO messages (org_id, content, tokens_used)
SELECT 'a0000000-0000-4000-8000-00000000000a', 'a', 1000 FROM generate_series(1, 5);
INSERT INTO messages (org_id, content, tokens_used)
SELECT 'b0000000-0000-4000-8000-00000000000b', 'b', 1000 FROM generate_series(1, 3);
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.refund((SELECT min(id) FROM messages WHERE billing_status = 'charged'));
-- four pending, the oldest ten minutes old
INSERT INTO messages (org_id, content, tokens_used, created_at)
SELECT 'a0000000-0000-4000-8000-00000000000a', 'new', 1000,
       now() - interval '10 minutes' + i * interval '1 second'
  FROM generate_series(0, 3) i;
-- the exporter's role: pg_monitor, nothing else
CREATE ROLE prometheus LOGIN IN ROLE pg_monitor;
SQL

# --- the exporter ---------------------------------------------------------
# A free port on 127.0.0.1: nothing answers on it.  Retried with another
# should the exporter fail to bind it.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    return 1
}

exporter_start() {
    local try
    for try in 1 2 3; do
        port=$(free_port)
        DATA_SOURCE_NAME="host=$MB_WORK port=$MB_PORT user=prometheus dbname=postgres sslmode=disable" \
            "$EXPORTER" --web.listen-address="127.0.0.1:$port" \
            --extend.query-path="$QUERIES" --log.level=warn \
            >"$MB_WORK/exporter.log" 2>&1 &
        exporter_pid=$!
        for _ in $(seq 1 50); do
            if curl -sf "http://127.0.0.1:$port/metrics" -o /dev/null; then
                return 0
            fi
            kill -0 "$exporter_pid" 2>/dev/null || break
            sleep 0.2
        done
        cat "$MB_WORK/exporter.log"
        kill "$exporter_pid" 2>/dev/null || true
        wait "$exporter_pid" 2>/dev/null || true
        exporter_pid=""
    done
    return 1
}

exporter_stop() {
    kill "$exporter_pid" 2>/dev/null || true
    wait "$exporter_pid" 2>/dev/null || true
    exporter_pid=""
}

scrape() {
    curl -sS "http://127.0.0.1:$port/metrics" >"$MB_WORK/metrics.txt"
}

# The value of a series (the first whose name and labels match), or "absent".
value() {
    awk -v name="$1" -v labels="${2:-}" '
        index($0, name "{") == 1 || $1 == name {
            if (labels == "" || index($0, labels) > 0) { print $NF; found = 1; exit }
        }
        END { if (!found) print "absent" }' "$MB_WORK/metrics.txt"
}

# expect NAME OP NUMBER [NUMBER]: = (equal), range (lo <= v < hi), nan
expect() {
    local name=$1 op=$2 want=${3:-} hi=${4:-}
    local got
    got=$(value "$name" 'datname="postgres"')
    case $name in pg_*) got=$(value "$name") ;; esac
    local good=false
    if [ "$got" != absent ]; then
        case $op in
            =) awk -v a="$got" -v b="$want" 'BEGIN { exit !(a + 0 == b + 0) }' && good=true ;;
            range) awk -v a="$got" -v lo="$want" -v hi="$hi" \
                       'BEGIN { exit !(a + 0 >= lo + 0 && a + 0 < hi + 0) }' && good=true ;;
            nan) [ "$got" = NaN ] && good=true ;;
        esac
    fi
    if $good; then
        ok "$name $op ${want}${hi:+ $hi} (got $got)"
    else
        not_ok "$name $op ${want}${hi:+ $hi} (got $got)"
    fi
}

expect_type() {
    if grep -qx "# TYPE $1 $2" "$MB_WORK/metrics.txt"; then
        ok "$1 is a $2"
    else
        not_ok "$1 is a $2"
    fi
}

if ! exporter_start; then
    not_ok "the exporter starts and serves /metrics"
    echo "$passed passed, $failed failed"
    exit 1
fi
ok "the exporter serves /metrics on 127.0.0.1:$port"

echo "== 1. four pending, five charged (one more refunded), two failed, three legacy"
scrape
expect pg_up = 1
expect pg_exporter_last_scrape_error = 0
expect pg_exporter_user_queries_load_error = 0
expect msgbilling_attached = 1
expect msgbilling_pending = 4
expect msgbilling_charged = 5
expect msgbilling_failed = 2
expect msgbilling_refunded = 1
expect msgbilling_legacy = 3
expect msgbilling_credits_charged = 5
expect msgbilling_backlog = 4
expect msgbilling_oldest_pending_age_seconds range 597 3600
expect msgbilling_worker_running = 0
expect msgbilling_worker_billed_total = 0
expect msgbilling_worker_last_run_timestamp_seconds = 0
expect msgbilling_worker_error = 0
expect_type msgbilling_pending gauge
expect_type msgbilling_worker_billed_total counter
# the same numbers as stats()
stats=$(psql_pg -Atc "SELECT concat_ws(' ', pending, charged, failed, refunded, credits_charged)
                        FROM msgbilling.stats()")
if [ "$stats" = "4 5 2 1 5.000000" ]; then
    ok "stats() agrees: $stats"
else
    not_ok "stats() agrees: $stats"
fi

echo "== 2. B tops up, everything is billed; the exporter caches for cache_seconds"
psql_pg >/dev/null <<'SQL'
SELECT msgbilling.top_up('b0000000-0000-4000-8000-00000000000b', 10);
CALL msgbilling.drain();
SQL
scrape
expect msgbilling_pending = 4          # cached: cache_seconds 60
exporter_stop
exporter_start || not_ok "the exporter restarts"
scrape
expect msgbilling_pending = 0
expect msgbilling_charged = 11
expect msgbilling_failed = 0
expect msgbilling_refunded = 1
expect msgbilling_legacy = 3
expect msgbilling_credits_charged = 11
expect msgbilling_backlog = 0
expect msgbilling_oldest_pending_age_seconds = 0

echo "== 3. detached: attached 0, the counts unknown (NaN)"
psql_pg -c "SELECT msgbilling.detach('messages')" >/dev/null
exporter_stop
exporter_start || not_ok "the exporter restarts"
scrape
expect msgbilling_attached = 0
expect msgbilling_pending nan
expect msgbilling_charged nan
expect pg_exporter_last_scrape_error = 0

exporter_stop
echo "== exporter test took $((SECONDS - start)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
