# chroot.sh — the other PostgreSQL versions' test runs: a minimal Debian of
# the release that packages that version (debootstrap), entered with
# chroot, with /proc, /dev and /dev/shm mounted, PostgreSQL and the test
# packages installed there from Debian's own archive, and scripts/test.sh
# run inside on a copy of the tree.  Sourced by scripts/test.sh, after
# common.sh.  Runs as root (or through sudo).

# The Debian release whose packages give PostgreSQL $1.
mb_release_of() {
    case $1 in
        15) echo bookworm ;;
        17) echo trixie ;;
        18) echo forky ;;
        *) echo "no Debian release is known for PostgreSQL $1" >&2; return 1 ;;
    esac
}

MB_MIRROR=${MB_MIRROR:-http://deb.debian.org/debian}

# The mounts under directory $1, deepest first.
mb_mounts_under() {
    awk -v d="$1/" 'index($2 "/", d) == 1 { print $2 }' /proc/mounts | sort -r
}

# Unmount everything under the chroot $1; fails if something stays mounted.
mb_chroot_umount() {
    local m
    for m in $(mb_mounts_under "$1"); do
        as_root umount "$m" 2>/dev/null || as_root umount -l "$m" || true
    done
    [ -z "$(mb_mounts_under "$1")" ]
}

# Make the chroot $1 for PostgreSQL $2, or finish one left by an earlier
# run (MB_CHROOTS keeps them): debootstrap, mounts, packages.
mb_chroot_prepare() {
    local dir=$1 major=$2 release script=""
    release=$(mb_release_of "$major")
    command -v debootstrap >/dev/null ||
        MB_PACKAGES="debootstrap" mb_install_deps
    if [ ! -e "$dir/.debootstrapped" ]; then
        echo "== debootstrap $release into $dir"
        # an older debootstrap has no script for a newer release: sid's
        # bootstraps any release of today's layout
        [ -e "/usr/share/debootstrap/scripts/$release" ] ||
            script=/usr/share/debootstrap/scripts/sid
        as_root rm -rf "$dir"
        as_root debootstrap --variant=minbase "$release" "$dir" "$MB_MIRROR" \
            $script >"$dir.debootstrap.log" 2>&1 ||
            { tail -20 "$dir.debootstrap.log"; return 1; }
        as_root touch "$dir/.debootstrapped"
    fi
    mountpoint -q "$dir/proc" || as_root mount -t proc proc "$dir/proc"
    mountpoint -q "$dir/dev" || as_root mount --bind /dev "$dir/dev"
    mountpoint -q "$dir/dev/shm" || as_root mount -t tmpfs -o mode=1777 shm "$dir/dev/shm"
    mountpoint -q "$dir/dev/pts" || as_root mount -t devpts devpts "$dir/dev/pts"
    as_root cp /etc/resolv.conf "$dir/etc/resolv.conf"
    # the archive may be a snapshot whose Release files have expired
    echo 'Acquire::Check-Valid-Until "false";' |
        as_root tee "$dir/etc/apt/apt.conf.d/99msgbilling" >/dev/null
    echo "== installing PostgreSQL $major in the $release chroot"
    # common.sh's own install, run inside: the same packages, for $major,
    # and Debian's Node.js, git for t/007 (1.0 is built from its release)
    as_root mkdir -p "$dir/root/mb-install"
    as_root cp scripts/common.sh "$dir/root/mb-install/"
    as_root chroot "$dir" env PG_MAJOR="$major" bash -c \
        '. /root/mb-install/common.sh
         MB_PACKAGES="$MB_PACKAGES nodejs npm git ca-certificates" mb_install_deps'
    # the certificate authorities this machine trusts beyond Debian's (a
    # proxy's, for npm), trusted inside too
    if [ -n "$(ls /usr/local/share/ca-certificates 2>/dev/null)" ]; then
        as_root cp -r /usr/local/share/ca-certificates/. "$dir/usr/local/share/ca-certificates/"
        as_root chroot "$dir" update-ca-certificates >/dev/null
    fi
}

# Run the suites of PostgreSQL $1 in its chroot under $2 on a copy of this
# tree; prints its output and leaves its summary in $MB_SUMMARY.
mb_chroot_test() {
    local major=$1 dir=$2/$(mb_release_of "$1") rc=0
    MB_SUMMARY="0 passed, 1 failed"
    mb_chroot_prepare "$dir" "$major" || { mb_chroot_umount "$dir"; return 1; }
    as_root rm -rf "$dir/root/msgbilling"
    as_root cp -a . "$dir/root/msgbilling"
    # UTF-8, as here: a cluster made without a locale would be SQL_ASCII
    as_root chroot "$dir" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 \
        CI="${CI:-}" PG_MAJOR="$major" MB_VERSIONS="$major" \
        NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
        bash /root/msgbilling/scripts/test.sh >"$2/test-$major.out" 2>&1 || rc=$?
    cat "$2/test-$major.out"
    MB_SUMMARY=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$2/test-$major.out" | tail -n 1)
    [ -n "$MB_SUMMARY" ] || MB_SUMMARY="0 passed, 1 failed"
    mb_chroot_umount "$dir" || echo "could not unmount everything under $dir" >&2
    return "$rc"
}
