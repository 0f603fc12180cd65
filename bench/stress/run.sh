#!/usr/bin/env bash
# run.sh — msgbilling's stress test: a mixed billing workload under pgbench
# for a given time, then invariants checked on the end state.
#
#   bash bench/stress/run.sh [seconds] [clients]      # default: 60 s, 8 clients
#
# On a throwaway cluster (port $STRESS_PORT, default 5495) it attaches a
# messages table (bigint keys, int orgs; 200 orgs, 180 with wallets of
# various sizes), runs pgbench with weighted scripts — the app's INSERTs
# and edits, every billing entry point, drain, top-ups (some with repeated
# idempotency keys), refunds, retries, reports, and spend control: holds
# (hold-only orgs under contention, holds named by messages), releases,
# budget changes, a few alert threshold changes — then a final CALL
# msgbilling.drain(), and checks the invariants (see docs/STRESS.md).
# Prints PASS/FAIL per invariant and "stress: N passed, N failed"; exits
# non-zero when one fails.
#
# Environment: STRESS_PORT (5495); STRESS_NO_BUILD=1 skips installing
# packages and building (scripts/test.sh has done it); STRESS_WORKER=1
# also runs msgbilling's background worker on the database; MB_KEEP=1
# keeps the scratch directory (cluster data, server log, pgbench output).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/common.sh

SECS=${1:-60}
CLIENTS=${2:-8}
PORT=${STRESS_PORT:-5495}
HERE=bench/stress
case "$SECS$CLIENTS" in
    *[!0-9]*|"") echo "usage: $0 [seconds] [clients]" >&2; exit 2 ;;
esac
[ "$SECS" -ge 1 ] && [ "$CLIENTS" -ge 1 ] || {
    echo "usage: $0 [seconds] [clients]" >&2; exit 2; }

if [ -z "${STRESS_NO_BUILD:-}" ]; then
    mb_install_deps
    mb_build
fi
mb_workdir
# stop the checkers of the run (below) too, however the script ends
stress_cleanup() {
    touch "$MB_WORK/stop_verify" 2>/dev/null || true
    mb_cleanup
}
trap stress_cleanup EXIT
cp "$HERE"/*.sql "$MB_WORK/"
chmod 644 "$MB_WORK"/*.sql

conf=("log_line_prefix = '%m [%p] %e '"
      "log_lock_waits = on"
      "synchronous_commit = off"
      "max_connections = $((CLIENTS + 20))"
      # one [msgbilling] line per billing call would flood the log
      "msgbilling.log_level = 'debug1'")
echo "== stress: ${SECS}s, $CLIENTS clients, port $PORT${STRESS_WORKER:+, with the worker}"
mb_cluster_start "$PORT" "${conf[@]}"
LOG="$MB_WORK/server.log"

q() { as_pg psql -X -q -At -v ON_ERROR_STOP=1 -d stress "$@"; }

as_pg psql -X -q -d postgres -c 'CREATE DATABASE stress' >/dev/null
q -v duration="$SECS" -f "$MB_WORK/setup.sql" >/dev/null
if [ -n "${STRESS_WORKER:-}" ]; then
    # the worker needs its database at start (else it retries a minute later)
    printf '%s\n' "shared_preload_libraries = 'msgbilling'" \
        "msgbilling.database = 'stress'" "msgbilling.naptime = '1s'" |
        as_pg tee -a "$MB_WORK/data/postgresql.conf" >/dev/null
    as_pg "$PG_BIN/pg_ctl" -D "$MB_WORK/data" -w -l "$LOG" restart >/dev/null
fi

deadlocks() {
    q -c "SELECT pg_stat_clear_snapshot();
          SELECT deadlocks FROM pg_stat_database WHERE datname = 'stress'" | tail -n 1
}
deadlocks_before=$(deadlocks)
log_start=$(as_pg stat -c %s "$LOG")

# While the workload runs: verify() every tenth of the run (at least 2 s),
# which must hold at every commit; and every second the orgs whose
# insufficient_credits failures their wallet could pay (none in any
# committed state: a wallet change re-pends them in its own transaction;
# a top-up soon after heals it, so it is looked for often).  Each line of
# the .out files: number of violations, details.
interval=$(( SECS / 10 )); [ "$interval" -ge 2 ] || interval=2
: >"$MB_WORK/verify_during.out"
: >"$MB_WORK/covered_during.out"
: >"$MB_WORK/budget_during.out"
(
    while [ -d "$MB_WORK" ] && [ ! -e "$MB_WORK/stop_verify" ]; do
        sleep "$interval"
        [ -e "$MB_WORK/stop_verify" ] && break
        q -c "SELECT count(*) FILTER (WHERE NOT ok) || ' ' ||
                     coalesce(string_agg(check_name || ': ' || coalesce(detail, ''), '; ')
                              FILTER (WHERE NOT ok), '')
                FROM msgbilling.verify()" >>"$MB_WORK/verify_during.out" 2>&1 ||
            echo "error" >>"$MB_WORK/verify_during.out"
    done
) &
verify_pid=$!
(
    while [ -d "$MB_WORK" ] && [ ! -e "$MB_WORK/stop_verify" ]; do
        sleep 1
        [ -e "$MB_WORK/stop_verify" ] && break
        q -c "SELECT count(*) || ' ' ||
                     coalesce(string_agg(format('org %s: %s failures (e.g. message %s), dearest %s, balance %s + overdraft %s',
                                                org_id, n, first_id, max_cost, balance, overdraft_limit), '; '), '')
                FROM stress.unpaid_but_covered" >>"$MB_WORK/covered_during.out" 2>&1 ||
            echo "error" >>"$MB_WORK/covered_during.out"
    done
) &
covered_pid=$!
(
    while [ -d "$MB_WORK" ] && [ ! -e "$MB_WORK/stop_verify" ]; do
        sleep 1
        [ -e "$MB_WORK/stop_verify" ] && break
        q -c "SELECT count(*) || ' ' ||
                     coalesce(string_agg(format('org %s: %s budget_exceeded failures (e.g. message %s), dearest %s, budget left %s',
                                                org_id, n, first_id, max_cost, left_), '; '), '')
                FROM stress.budget_failures_covered" >>"$MB_WORK/budget_during.out" 2>&1 ||
            echo "error" >>"$MB_WORK/budget_during.out"
    done
) &
budget_pid=$!

progress=$(( SECS >= 600 ? 60 : (SECS >= 60 ? 10 : 5) ))
threads=$(( CLIENTS < 4 ? CLIENTS : 4 ))
echo "== pgbench -T $SECS -c $CLIENTS"
set +e
as_pg pgbench -n -M simple --max-tries=1 --failures-detailed \
    -c "$CLIENTS" -j "$threads" -T "$SECS" -P "$progress" \
    -f "$MB_WORK/insert.sql@40" \
    -f "$MB_WORK/all_pending.sql@8" \
    -f "$MB_WORK/org_pending.sql@8" \
    -f "$MB_WORK/batch.sql@8" \
    -f "$MB_WORK/one.sql@8" \
    -f "$MB_WORK/drain.sql@3" \
    -f "$MB_WORK/top_up.sql@10" \
    -f "$MB_WORK/refund.sql@10" \
    -f "$MB_WORK/retry.sql@3" \
    -f "$MB_WORK/report.sql@2" \
    -f "$MB_WORK/app_edit.sql@3" \
    -f "$MB_WORK/hold.sql@12" \
    -f "$MB_WORK/release.sql@8" \
    -f "$MB_WORK/insert_held.sql@10" \
    -f "$MB_WORK/budget.sql@2" \
    -f "$MB_WORK/alert_churn.sql@1" \
    stress 2>&1 | tee "$MB_WORK/pgbench.out" | grep --line-buffered '^progress:'
pgbench_rc=${PIPESTATUS[0]}
set -e
touch "$MB_WORK/stop_verify"
wait "$verify_pid" "$covered_pid" "$budget_pid" || true
# the run's summary (the per-script sections are long)
sed -n '/^transaction type/,/^SQL script 1/p' "$MB_WORK/pgbench.out" | sed '$d'
# one line per script
awk '/^SQL script [0-9]+:/ { n = split($4, p, "/"); name = p[n] }
     /^ - [0-9]+ transactions/ { tx = $2; tps = $NF; sub(/\)$/, "", tps) }
     /^ - number of failed transactions:/ { f = $6 }
     /^ - latency average/ { printf "  %-16s %8s tx  %9.1f tps  %8s ms avg  %s failed\n", name, tx, tps, $5, f }' \
    "$MB_WORK/pgbench.out"
grep -E 'aborted|^pgbench:' "$MB_WORK/pgbench.out" | head -n 20 || true

echo "== final CALL msgbilling.drain()"
q -c 'CALL msgbilling.drain()'

echo "== what the run did"
q -F ' ' <<'SQL'
SELECT 'messages ' || sum(n) || ': ' ||
       string_agg(n || ' ' || s, ', ' ORDER BY s)
  FROM (SELECT coalesce(billing_status || coalesce(' ' || billing_error, ''), '?') AS s,
               count(*) AS n FROM messages GROUP BY 1) t;
SELECT 'ledger: ' || string_agg(n || ' ' || kind, ', ' ORDER BY kind)
  FROM (SELECT kind, count(*) AS n FROM msgbilling.ledger GROUP BY 1) t;
SELECT 'top-up calls: ' || count(*) FILTER (WHERE key IS NULL) || ' unkeyed, ' ||
       count(*) FILTER (WHERE key IS NOT NULL AND credited) || ' keyed that credited, ' ||
       count(*) FILTER (WHERE key IS NOT NULL AND NOT credited) || ' keyed replays'
  FROM stress.log WHERE kind = 'top_up';
SELECT 'refunds: ' || count(*) FILTER (WHERE kind = 'refund') || ' succeeded; caught: ' ||
       coalesce((SELECT string_agg(n || ' ' || sqlstate || ' from ' || fn, ', ')
                   FROM (SELECT fn, sqlstate, count(*) AS n FROM stress.log
                          WHERE kind = 'caught' GROUP BY 1, 2) c), 'none')
  FROM stress.log;
SELECT 'holds of hold-only orgs: ' || count(*) || ' calls, ' ||
       count(hold_id) || ' granted (' || count(DISTINCT hold_id) || ' holds), ' ||
       count(*) - count(hold_id) || ' refused (' ||
       round(100.0 * (count(*) - count(hold_id)) / greatest(count(*), 1), 1) || '%)'
  FROM stress.hold_log WHERE org > 300;
-- how close the holds came: per hold-only org, the most granted and
-- active at once (as holds_within_wallet counts them) against its limit
WITH c AS (SELECT DISTINCT ON (hold_id) hold_id, org, coalesce(held_amount, amount) AS held,
                  granted_at, expires_at
             FROM stress.hold_log WHERE hold_id IS NOT NULL AND org > 300
            ORDER BY hold_id, id),
     iv AS (SELECT c.*, least(c.expires_at, (SELECT min(r.started_at) FROM stress.release_log r
                                              WHERE r.hold_id = c.hold_id)) AS ends FROM c),
     ev AS (SELECT org, granted_at AS ts, 1 AS ord, held AS d FROM iv WHERE ends > granted_at
            UNION ALL SELECT org, ends, 0, -held FROM iv WHERE ends > granted_at),
     r AS (SELECT org, ord, sum(d) OVER (PARTITION BY org ORDER BY ts, ord) AS active FROM ev)
SELECT 'most held at once: ' || string_agg(r.org || ' ' || r.m || '/' || l.hold_limit, ', ' ORDER BY r.org)
  FROM (SELECT org, max(active) AS m FROM r WHERE ord = 1 GROUP BY org) r
  JOIN stress.hold_limit l ON l.org = r.org;
SELECT 'holds of other orgs: ' || count(*) || ' calls, ' || count(hold_id) || ' granted, ' ||
       count(*) - count(hold_id) || ' refused; ' ||
       count(*) FILTER (WHERE purpose = 'message') || ' for messages, ' ||
       (SELECT count(*) FROM messages WHERE hold_id > 0) || ' messages name a hold'
  FROM stress.hold_log WHERE org <= 300;
SELECT 'releases: ' || count(*) || ' calls, ' || count(*) FILTER (WHERE result) ||
       ' of an active hold; holds left: ' || (SELECT count(*) FROM msgbilling.holds)
  FROM stress.release_log;
SELECT 'alerts: ' || coalesce(string_agg(n || ' ' || kind, ', ' ORDER BY kind), 'none') ||
       ' (' || (SELECT count(*) FROM msgbilling.alert_rules) || ' thresholds now)'
  FROM (SELECT kind, count(*) AS n FROM msgbilling.alerts GROUP BY 1) t;
SELECT 'budgets: ' || (SELECT count(*) FROM stress.budget_log) || ' set_budget calls; ' ||
       (SELECT count(*) FROM messages WHERE billing_error = 'budget_exceeded') ||
       ' budget_exceeded failures; ' ||
       string_agg(b.org_id || ' ' || b.period || (CASE WHEN b.hard THEN ' hard ' ELSE ' soft ' END) ||
                  b.spent || '/' || b.amount, ', ' ORDER BY b.org_id, b.period)
  FROM msgbilling.budgets b;
SQL
long_waits=$(as_pg tail -c +"$((log_start + 1))" "$LOG" | grep -c 'still waiting for' || true)
echo "lock waits over deadlock_timeout (1s): $long_waits"

echo "== invariants"
passed=0
failed=0
report() {     # name ok(t/f) detail
    if [ "$2" = t ]; then
        passed=$((passed + 1)); echo "PASS $1"
    else
        failed=$((failed + 1)); echo "FAIL $1: $3"
    fi
}

rows=$(q -f "$MB_WORK/check.sql" 2>&1) || {
    echo "$rows"; report end_state_checks f "check.sql failed"; rows=""; }
while IFS='|' read -r name ok detail; do
    [ -n "$name" ] && report "$name" "$ok" "$detail"
done <<<"$rows"

# the checks during the run
during() {      # name file
    local checks bad
    checks=$(grep -c . "$2" || true)
    bad=$(grep -vc '^0 $' "$2" || true)
    if [ "$checks" -eq 0 ]; then
        # a run too short for one check proves nothing
        report "$1" f "no check ran during the ${SECS}s run: run it for longer"
    elif [ "$bad" -eq 0 ]; then
        report "$1" t ""
        echo "     ($checks checks)"
    else
        report "$1" f "$bad of $checks checks: $(grep -v '^0 $' "$2" | head -n 3 | tr '\n' ' ')"
    fi
}
during verify_ok_during_run "$MB_WORK/verify_during.out"
during insufficient_failures_real_during_run "$MB_WORK/covered_during.out"
during budget_failures_real_during_run "$MB_WORK/budget_during.out"

# deadlocks
deadlocks_after=$(deadlocks)
if [ "$deadlocks_after" = "$deadlocks_before" ]; then
    report zero_deadlocks t ""
else
    report zero_deadlocks f "pg_stat_database.deadlocks went from $deadlocks_before to $deadlocks_after"
fi

# pgbench: every transaction succeeded (no serialization or deadlock
# failure, --max-tries=1) and no client aborted on an error
failed_tx=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$MB_WORK/pgbench.out" | head -n 1)
aborted=$(grep -c 'aborted' "$MB_WORK/pgbench.out" || true)
if [ "$pgbench_rc" -eq 0 ] && [ "${failed_tx:-x}" = 0 ] && [ "$aborted" -eq 0 ]; then
    report pgbench_no_failed_transactions t ""
else
    report pgbench_no_failed_transactions f "exit $pgbench_rc, failed transactions ${failed_tx:-unknown}, $aborted abort line(s): $(grep -E 'aborted|error|ERROR' "$MB_WORK/pgbench.out" | head -n 3 | tr '\n' ' ')"
fi

# the server log from the start of the run: no ERROR, FATAL or PANIC but
# the documented refund/billing errors (caught by the wrappers, so they
# do not even reach the log) and autovacuum being cancelled
as_pg tail -c +"$((log_start + 1))" "$LOG" >"$MB_WORK/run.log"
unexpected=$(grep -E ' \[[0-9]+\] [0-9A-Z]{5} (ERROR|FATAL|PANIC):  ' "$MB_WORK/run.log" |
    grep -vE ' (55000 ERROR:  message -?[0-9]+ (was already refunded|is not charged)|P0002 ERROR:  message -?[0-9]+ does not exist in |57014 ERROR:  canceling autovacuum task)' || true)
crashes=$(grep -E 'terminated by signal|was terminated|server process .* exited with exit code' "$MB_WORK/run.log" || true)
if [ -z "$unexpected$crashes" ]; then
    report no_unexpected_errors t ""
else
    report no_unexpected_errors f "$(printf '%s\n%s\n' "$unexpected" "$crashes" | grep . | wc -l) line(s) in the server log: $(printf '%s\n%s\n' "$unexpected" "$crashes" | grep . | head -n 3 | tr '\n' ' ')"
fi

if [ -n "${MB_KEEP:-}" ]; then
    echo "(kept: $MB_WORK)"
elif [ "$failed" -gt 0 ]; then
    echo "(MB_KEEP=1 keeps the cluster, server log and pgbench output)"
fi
echo "stress: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
