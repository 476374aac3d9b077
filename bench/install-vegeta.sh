#!/usr/bin/env bash
# Build Vegeta (the HTTP load generator of `make bench`) into the project's .stack/bin, once,
# and print its path. The version is pinned in deploy/tools/versions.env.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../deploy/tools/versions.env
. "$repo/deploy/tools/versions.env"

bin="$(bash "$repo/deploy/tools/go-install.sh" vegeta github.com/tsenart/vegeta/v12 "$VEGETA_VERSION")"
"$bin" -version >/dev/null 2>&1 || { echo "install-vegeta: built vegeta at $bin does not run" >&2; exit 1; }
echo "$bin"
