#!/usr/bin/env bash
# Build Toxiproxy's server with `go install` into the project's .stack/bin, once.
#
#   chaos/install-toxiproxy.sh            prints the path of the binary
#
# `go install github.com/Shopify/toxiproxy/v2/cmd/server@<version>` makes a binary
# named `server`; it is renamed to .stack/bin/toxiproxy-server. GOBIN, GOPATH and
# GOCACHE default to directories under .stack so a fresh machine needs only Go and
# the Go module proxy. Built in a scratch dir and renamed, so an interrupted build
# leaves no half binary. The version is pinned in deploy/tools/versions.env.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
# shellcheck source=../deploy/tools/versions.env
. "$repo/deploy/tools/versions.env"

bin_dir="${TOXIPROXY_BIN_DIR:-$repo/.stack/bin}"
bin="$bin_dir/toxiproxy-server"
stamp="$bin_dir/toxiproxy-server.version"

say() { echo "install-toxiproxy: $*" >&2; }
die() { say "$*"; exit 1; }

if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$TOXIPROXY_VERSION" ]; then
    echo "$bin"
    exit 0
fi
command -v go >/dev/null 2>&1 || die "go is needed (go install github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION)"
mkdir -p "$bin_dir"
export GOPATH="${GOPATH:-$repo/.stack/go}"
export GOCACHE="${GOCACHE:-$repo/.stack/go-cache}"
say "building toxiproxy $TOXIPROXY_VERSION with go install (cached in $bin_dir)"
scratch="$(mktemp -d "$bin_dir/.build.XXXXXX")"
(cd "$scratch" && GOBIN="$scratch" GOFLAGS=-buildvcs=false go install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION") \
    || { rm -rf "$scratch"; die "go install github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION failed"; }
mv -f "$scratch/server" "$bin"
rm -rf "$scratch"
"$bin" -version >/dev/null 2>&1 || die "built toxiproxy at $bin does not run"
echo "$TOXIPROXY_VERSION" > "$stamp"
echo "$bin"
