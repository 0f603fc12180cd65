# common.sh — shared by the test, demo, bench, stress and example scripts:
# install the packages msgbilling needs, build and install it, and run
# throwaway clusters as the postgres OS user (initdb refuses to run as root).
# Sourced, not run.

PG_MAJOR=${PG_MAJOR:-15}
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
# pg_cron, pgbouncer, perl (prove) and libipc-run-perl are for the TAP tests;
# prometheus-postgres-exporter and curl for examples/monitoring.
MB_PACKAGES="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR \
postgresql-$PG_MAJOR-cron pgbouncer perl libipc-run-perl make gcc \
prometheus-postgres-exporter curl"

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Install the packages that are missing (all of them on a fresh machine).
# Debian starts a package's service when it installs it (a postgresql
# cluster on 5432, prometheus-postgres-exporter on :9187): where no
# policy-rc.d says otherwise already (containers have one), one that
# forbids it is in place during the install.  The tests run their own.
mb_install_deps() {
    local missing="" policy="" rc=0
    for p in $MB_PACKAGES; do
        # installed, not merely known (removed ones keep their config)
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$' ||
            missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "== installing:$missing"
        as_root apt-get update -qq
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            policy=/usr/sbin/policy-rc.d
            printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
            as_root chmod 755 "$policy"
        fi
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq $missing >/dev/null || rc=$?
        [ -z "$policy" ] || as_root rm -f "$policy"
        return "$rc"
    fi
}

# Build with warnings as errors and install into the server's directories.
mb_build() {
    echo "== building msgbilling"
    make -s clean >/dev/null 2>&1 || true
    make -s PG_CONFIG="$PG_BIN/pg_config" PG_CFLAGS="-Wall -Werror"
    as_root make -s PG_CONFIG="$PG_BIN/pg_config" install >/dev/null
}

# A scratch directory owned by postgres, removed by mb_cleanup.
mb_workdir() {
    MB_WORK=$(mktemp -d /tmp/msgbilling.XXXXXX)
    chmod 755 "$MB_WORK"
    as_root chown postgres "$MB_WORK"
}

# Run a command as the postgres OS user, with the cluster's socket and port.
as_pg() {
    if [ "$(id -un)" = postgres ]; then
        env PGHOST="$MB_WORK" PGPORT="$MB_PORT" "$@"
    else
        as_root runuser -u postgres -- env PGHOST="$MB_WORK" PGPORT="$MB_PORT" \
            PATH="$PG_BIN:$PATH" "$@"
    fi
}

# Start a throwaway cluster in $MB_WORK/data on port $1; extra lines for
# postgresql.conf may follow as arguments.
mb_cluster_start() {
    MB_PORT=$1; shift
    as_pg "$PG_BIN/initdb" -D "$MB_WORK/data" -A trust -U postgres >/dev/null
    for line in "$@"; do
        echo "$line" | as_pg tee -a "$MB_WORK/data/postgresql.conf" >/dev/null
    done
    as_pg "$PG_BIN/pg_ctl" -D "$MB_WORK/data" -w -l "$MB_WORK/server.log" \
        -o "-p $MB_PORT -k $MB_WORK -c listen_addresses=''" start >/dev/null
}

# Stop the cluster, if any, and remove the scratch directory.
mb_cleanup() {
    if [ -n "${MB_WORK:-}" ] && [ -d "$MB_WORK/data" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$MB_WORK/data" -m fast stop >/dev/null 2>&1 || true
    fi
    if [ -n "${MB_WORK:-}" ] && [ -z "${MB_KEEP:-}" ]; then
        as_root rm -rf "$MB_WORK"
    fi
}
