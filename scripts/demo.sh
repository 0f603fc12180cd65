#!/usr/bin/env bash
# demo.sh — msgbilling's main job, end to end: an app's LLM messages arrive
# as 'pending', msgbilling bills them against org wallets, and the books
# reconcile.  Prints a walkthrough (demo/demo.sql) and leaves nothing behind.
#
#   bash scripts/demo.sh
#
# Installs what it needs on Debian 12 (as root, or through sudo), builds and
# installs the extension, runs the demo as the postgres OS user on a
# throwaway cluster (port 5492, socket in a scratch directory), and stops
# that cluster at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

repo=$PWD

mb_install_deps
mb_build
mb_workdir
trap mb_cleanup EXIT
# The postgres user may not be allowed into the clone (say, under /root):
# run its commands from the scratch directory, and let this shell, not
# postgres, read the script.
cd "$MB_WORK"
mb_cluster_start 5492

echo "== running demo/demo.sql on a throwaway cluster"
start=$SECONDS
as_pg "$PG_BIN/createdb" demo
as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d demo <"$repo/demo/demo.sql"

mb_cleanup
trap - EXIT
echo "== done: demo.sql took $((SECONDS - start)) s; the cluster is stopped and removed"
