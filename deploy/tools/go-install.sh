#!/usr/bin/env bash
# Build a Go command with `go install` into the project's .stack/bin, once per version.
#
#   deploy/tools/go-install.sh NAME PACKAGE VERSION    prints the path of the binary
#
# e.g. deploy/tools/go-install.sh toxiproxy-server github.com/Shopify/toxiproxy/v2/cmd/server v2.5.0
# makes .stack/bin/toxiproxy-server. GOBIN, GOPATH and GOCACHE default to
# directories under .stack, so a fresh machine needs only Go and the Go module
# proxy. Built in a scratch dir and renamed, so an interrupted build leaves no
# half binary; a stamp file next to it names the version it was built from.
set -euo pipefail

[ $# -eq 3 ] || { echo "usage: $0 NAME PACKAGE VERSION" >&2; exit 2; }
name="$1" package="$2" version="$3"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin_dir="${GO_TOOLS_BIN_DIR:-$repo/.stack/bin}"
bin="$bin_dir/$name"
stamp="$bin_dir/$name.version"

say() { echo "go-install $name: $*" >&2; }
die() { say "$*"; exit 1; }

if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    echo "$bin"
    exit 0
fi
command -v go >/dev/null 2>&1 || die "go is needed (go install $package@$version)"
mkdir -p "$bin_dir"
export GOPATH="${GOPATH:-$repo/.stack/go}"
export GOCACHE="${GOCACHE:-$repo/.stack/go-cache}"
say "building $package@$version with go install (cached in $bin_dir)"
scratch="$(mktemp -d "$bin_dir/.build.XXXXXX")"
(cd "$scratch" && GOBIN="$scratch" GOFLAGS=-buildvcs=false go install "$package@$version") \
    || { rm -rf "$scratch"; die "go install $package@$version failed"; }
# go names the binary after the package's last element (a /vN major-version suffix skipped): take what it made.
built=("$scratch"/*)
[ ${#built[@]} -eq 1 ] && [ -f "${built[0]}" ] || { rm -rf "$scratch"; die "go install made ${built[*]}, not one binary"; }
mv -f "${built[0]}" "$bin"
rm -rf "$scratch"
echo "$version" > "$stamp"
echo "$bin"
