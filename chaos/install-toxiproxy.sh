#!/usr/bin/env bash
# Build Toxiproxy's server into the project's .stack/bin, once, and print its path.
#
#   chaos/install-toxiproxy.sh            prints the path of the binary
#
# `go install github.com/Shopify/toxiproxy/v2/cmd/server@<version>` (through
# deploy/tools/go-install.sh) makes a binary named `server`; it is kept as
# .stack/bin/toxiproxy-server (TOXIPROXY_BIN_DIR to put it elsewhere). The
# version is pinned in deploy/tools/versions.env.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
# shellcheck source=../deploy/tools/versions.env
. "$repo/deploy/tools/versions.env"

bin="$(GO_TOOLS_BIN_DIR="${TOXIPROXY_BIN_DIR:-$repo/.stack/bin}" \
    bash "$repo/deploy/tools/go-install.sh" toxiproxy-server github.com/Shopify/toxiproxy/v2/cmd/server "$TOXIPROXY_VERSION")"
"$bin" -version >/dev/null 2>&1 || { echo "install-toxiproxy: built toxiproxy at $bin does not run" >&2; exit 1; }
echo "$bin"
