#!/usr/bin/env bash
# Print the path of a working `promtool` on stdout, installing Debian's
# `prometheus` package (which ships /usr/bin/promtool) if none is found.
#
#   promtool="$(deploy/prometheus/ensure-promtool.sh)" && "$promtool" --version
#
# Idempotent and quiet on success: the only output is the path. Needs root
# (or passwordless apt) the first time only. Never starts a Prometheus server:
# service starts from the package's postinst are refused via policy-rc.d, and
# any prometheus daemon that still appears during the install is stopped.
set -euo pipefail

die() { echo "ensure-promtool: $*" >&2; exit 1; }

works() { [ -n "${1:-}" ] && [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }

find_promtool() {
    local candidate
    for candidate in "${PROMTOOL:-}" "$(command -v promtool 2>/dev/null || true)" /usr/bin/promtool; do
        if works "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if find_promtool; then
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || die "no working promtool on PATH and no apt-get to install one; install Prometheus' promtool and put it on PATH (or set PROMTOOL=/path/to/promtool)"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
        || die "no working promtool on PATH; installing Debian's 'prometheus' package needs root (run: sudo apt-get install --no-install-recommends prometheus)"
    SUDO=(sudo -n)
fi

LOG="$(mktemp -t ensure-promtool.XXXXXX.log)"
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
cleanup() {
    if [ "$OWN_POLICY" = 1 ]; then "${SUDO[@]}" rm -f "$POLICY"; fi
    rm -f "$LOG"
}
trap cleanup EXIT

# Refuse service starts during the install unless a policy is already in place.
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, written by ensure-promtool.sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 0755 "$POLICY"
    OWN_POLICY=1
fi

# Pids of running `prometheus` servers (no procps needed).
prometheus_pids() {
    local comm
    for comm in /proc/[0-9]*/comm; do
        [ "$(cat "$comm" 2>/dev/null)" = prometheus ] && basename "$(dirname "$comm")"
    done | sort
    return 0
}

before="$(prometheus_pids)"

if ! "${SUDO[@]}" apt-get update -qq >"$LOG" 2>&1; then
    cat "$LOG" >&2
    die "apt-get update failed; cannot install promtool"
fi
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends prometheus >"$LOG" 2>&1; then
    cat "$LOG" >&2
    die "apt-get install prometheus failed; cannot install promtool"
fi

# Stop any prometheus server that the install started (only new pids).
after="$(prometheus_pids)"
for pid in $(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after")); do
    "${SUDO[@]}" kill "$pid" 2>/dev/null || true
done

find_promtool || die "installed Debian's 'prometheus' package but found no working promtool (expected /usr/bin/promtool)"
