#!/usr/bin/env bash
# test.sh — run every msgbilling test suite on throwaway clusters, on each
# PostgreSQL version msgbilling supports, and end with one line
# "N passed, N failed" (the sum over the versions, which the line before it
# lists).  Exits non-zero on any failure.
#
#   bash scripts/test.sh                  # PostgreSQL 15, 17 and 18
#   MB_VERSIONS=15 bash scripts/test.sh   # this machine's 15 only
#
# Installs what it needs on Debian 12 (as root, or through sudo), builds
# with -Werror, installs the extension, and runs the suites as the postgres
# OS user: pg_regress and isolation (on a copy of the tree), TAP, the Node
# example's tests, the exporter test, then a 20-second stress run.  Version
# 15 runs here; 17 and 18 in a chroot each of the Debian release that
# packages them (scripts/chroot.sh), made for the run and removed after it
# (kept in $MB_CHROOTS when that is set, to be reused).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
. scripts/chroot.sh

MB_VERSIONS=${MB_VERSIONS:-15 17 18}

passed=0
failed=0

# Count a pg_regress run's results from its output file.
count_regress() {
    local out=$1
    local ok bad
    ok=$(grep -Ec '^(test| ) .* \.\.\. ok|^ok [0-9]' "$out" || true)
    bad=$(grep -Ec '\.\.\. FAILED|^not ok [0-9]' "$out" || true)
    passed=$((passed + ok))
    failed=$((failed + bad))
}

# One PGXS installcheck suite (regress or isolation), counted from its
# output; a run that dies before it reports counts as one failure.
run_installcheck() {
    local name=$1; shift
    local out="$MB_WORK/$name.out"
    echo "== $name"
    if as_pg make -C "$MB_WORK/tree" -s PG_CONFIG="$PG_BIN/pg_config" \
            installcheck "$@" >"$out" 2>&1; then
        cat "$out"
        count_regress "$out"
        return
    fi
    cat "$out"
    cat "$MB_WORK/tree"/results_regress/regression.diffs \
        "$MB_WORK/tree"/output_iso/regression.diffs 2>/dev/null | head -300 || true
    local before=$failed
    count_regress "$out"
    [ "$failed" -gt "$before" ] || failed=$((failed + 1))
}

# The TAP suite (t/*.pl; each test starts its own clusters), counted by
# assertion: prove runs verbose, so every assertion prints "ok N - ..." or
# "not ok N - ...".  Assertions rather than test files, so that the total
# says how much was checked, as the other suites' counts do.  A test file
# that dies (non-zero exit without a failed assertion, bad plan) counts as
# one failure more, and so does a run that fails with neither (prove or
# make dying, a bail-out).
run_tap() {
    local out="$MB_WORK/tap.out"
    local rc=0 ok bad died
    echo "== tap"
    as_pg make -C "$MB_WORK/tree" -s PG_CONFIG="$PG_BIN/pg_config" \
        installcheck REGRESS= ISOLATION= PROVE_FLAGS=--verbose \
        >"$out" 2>&1 || rc=$?
    cat "$out"
    ok=$(grep -Ec '^ok [0-9]' "$out" || true)
    bad=$(grep -Ec '^not ok [0-9]' "$out" || true)
    died=$(grep -Ec '^t/.*\(Wstat: .* Failed: 0\)$' "$out" || true)
    passed=$((passed + ok))
    failed=$((failed + bad + died))
    if [ "$rc" -ne 0 ]; then
        tail -n 200 "$MB_WORK"/tree/tmp_check/log/regress_log_* 2>/dev/null || true
        [ $((bad + died)) -gt 0 ] || failed=$((failed + 1))
    fi
}

# Run one suite that reports its own counts: name, the pattern that
# prints its passed count, the one that prints its failed count, then the
# command.  A run that fails with no failed test counts as one failure.
run_counted() {
    local name=$1 ok_re=$2 bad_re=$3; shift 3
    local out="$MB_WORK/$name.out" rc=0 ok bad
    echo "== $name"
    "$@" >"$out" 2>&1 || rc=$?
    cat "$out"
    ok=$(sed -n "$ok_re" "$out" | tail -n 1)
    bad=$(sed -n "$bad_re" "$out" | tail -n 1)
    passed=$((passed + ${ok:-0}))
    failed=$((failed + ${bad:-0}))
    [ "$rc" -eq 0 ] || [ "${bad:-0}" -gt 0 ] || failed=$((failed + 1))
}

# "N passed, N failed" lines, as this script and the exporter test print.
SUMMARY_OK='s/^\(stress: \)\{0,1\}\([0-9][0-9]*\) passed, [0-9][0-9]* failed$/\2/p'
SUMMARY_BAD='s/^\(stress: \)\{0,1\}[0-9][0-9]* passed, \([0-9][0-9]*\) failed$/\2/p'

# The stress test (bench/stress/run.sh, docs/STRESS.md), short: 20 s with
# 8 clients on a cluster of its own; each invariant is one test.
run_stress() {
    run_counted stress "$SUMMARY_OK" "$SUMMARY_BAD" \
        env STRESS_NO_BUILD=1 bash bench/stress/run.sh 20 8
}

# The Node.js example (examples/node/run-tests.sh: npm ci, a cluster of its
# own on port 5497, node --test), counted from node's "# pass N" and
# "# fail N".
run_node() {
    run_counted node 's/^# pass \([0-9][0-9]*\)$/\1/p' \
        's/^# fail \([0-9][0-9]*\)$/\1/p' bash examples/node/run-tests.sh
}

# msgbilling.metrics through prometheus-postgres-exporter
# (examples/monitoring/test-exporter.sh: a cluster of its own on port 5498).
run_exporter() {
    run_counted exporter "$SUMMARY_OK" "$SUMMARY_BAD" \
        bash examples/monitoring/test-exporter.sh
}

# a failure before the suites report (install, build, cluster) still ends
# with the summary line
summarized=0
chroots=""
on_exit() {
    local rc=$?
    [ "$summarized" = 1 ] || echo "$passed passed, $((failed + 1)) failed"
    mb_cleanup
    # never remove a chroot with something still mounted in it: /dev is
    if [ -n "$chroots" ] && [ -z "${MB_CHROOTS:-}" ] && mb_chroot_umount "$chroots"; then
        as_root rm -rf "$chroots"
    fi
    return "$rc"
}
trap on_exit EXIT

# Every suite, on this machine's PostgreSQL ($PG_MAJOR).
run_here() {
    mb_install_deps
    mb_build
    mb_workdir
    cp -a . "$MB_WORK/tree"
    as_root chown -R postgres "$MB_WORK/tree"
    mb_cluster_start 5491 "max_prepared_transactions = 10"
    # installcheck runs every suite the Makefile defines: empty the others.
    run_installcheck pg_regress ISOLATION= TAP_TESTS=
    run_installcheck isolation REGRESS= TAP_TESTS=
    run_tap
    run_node
    run_exporter
    run_stress
    mb_cleanup
    MB_WORK=""
}

# The same in PostgreSQL $1's chroot, its counts added to ours.
run_in_chroot() {
    local ok bad
    echo "== PostgreSQL $1, in a Debian $(mb_release_of "$1") chroot"
    if [ -z "$chroots" ]; then
        chroots=${MB_CHROOTS:-$(mktemp -d /var/tmp/msgbilling-chroots.XXXXXX)}
        as_root mkdir -p "$chroots"
    fi
    mb_chroot_test "$1" "$chroots" || true
    ok=${MB_SUMMARY%% passed*}
    bad=${MB_SUMMARY#* passed, }
    bad=${bad%% failed}
    passed=$((passed + ok))
    failed=$((failed + bad))
}

ran=""
for v in $MB_VERSIONS; do
    before_ok=$passed before_bad=$failed
    if [ "$v" = "$PG_MAJOR" ]; then run_here; else run_in_chroot "$v"; fi
    ran="$ran${ran:+; }PostgreSQL $v: $((passed - before_ok)) passed, $((failed - before_bad)) failed"
done

summarized=1
echo "$ran"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
