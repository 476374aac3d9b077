#!/usr/bin/env bash
# Install what the deployment tests (tests/deployment/) need, idempotently:
#
#   deploy/tools/install-deploy-tools.sh            everything below (make deploy-tools)
#   deploy/tools/install-deploy-tools.sh packages   buildah + debootstrap from Debian's packages
#   deploy/tools/install-deploy-tools.sh helm       build helm with `go install`, cached; prints its path
#   deploy/tools/install-deploy-tools.sh modules    download the KEDA and prometheus-operator Go modules
#                                                   (their CRDs and scaler schema); prints their dirs
#   deploy/tools/install-deploy-tools.sh base-image a local stand-in for the Dockerfile's base image,
#                                                   built with debootstrap when no such image exists
#
# Versions are pinned in deploy/tools/versions.env. Paths:
#   helm      ${TP_TOOLS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/timestamp-pipeline}/helm-<version>/helm
#   modules   the Go module cache ($(go env GOMODCACHE))
#   base      buildah's local image storage, tagged exactly as the Dockerfile's FROM
#
# No container registry is reachable here, so the base image cannot be
# pulled: debootstrap builds a minimal Debian root filesystem from Debian's
# packages and buildah commits it under the base image's name. buildah uses a
# local image before it tries a registry, so docker/Dockerfile builds unchanged
# (in production the real image is pulled). Nothing of this machine goes into
# the image but the Debian mirror named in its apt sources (the host's own).
#
# buildah and debootstrap need root (or passwordless sudo) to install. Without
# them the script says so and carries on: the image tests then skip, naming
# the reason. Everything else failing is an error.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/tools/versions.env
. "$HERE/versions.env"

CACHE="${TP_TOOLS_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/timestamp-pipeline}"

# Go from PATH, or where the official tarball installs it.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    PATH="$PATH:/usr/local/go/bin"
fi

say() { echo "deploy-tools: $*" >&2; }
die() { say "$*"; exit 1; }

SUDO=()
can_root() {
    if [ "$(id -u)" -eq 0 ]; then return 0; fi
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=(sudo -n); return 0; fi
    return 1
}

packages() {
    local missing=()
    command -v buildah >/dev/null 2>&1 || missing+=(buildah)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1 || ! can_root; then
        say "WARNING: ${missing[*]} missing and cannot be installed here (needs apt-get and root);"
        say "         the container image tests will be skipped. Install them: apt-get install ${missing[*]}"
        return 0
    fi
    say "installing ${missing[*]} (apt-get)"
    local log
    log="$(mktemp)"
    if ! { "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "apt-get install ${missing[*]} failed"
    fi
    rm -f "$log"
}

helm_path() { echo "$CACHE/helm-$HELM_VERSION/helm"; }

helm() {
    local bin
    bin="$(helm_path)"
    if [ -x "$bin" ] && "$bin" version --short >/dev/null 2>&1; then
        echo "$bin"
        return 0
    fi
    command -v go >/dev/null 2>&1 || die "go is needed to build helm (go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION)"
    say "building helm $HELM_VERSION with go install (about 2 minutes on 2 cores; cached in $(dirname "$bin"))"
    mkdir -p "$(dirname "$bin")"
    # Build into a scratch dir and rename, so an interrupted build leaves no half binary.
    local scratch
    scratch="$(mktemp -d "$(dirname "$bin")/.build.XXXXXX")"
    (cd "$scratch" && GOBIN="$scratch" GOFLAGS=-buildvcs=false go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") \
        || { rm -rf "$scratch"; die "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed"; }
    mv -f "$scratch/helm" "$bin"
    rm -rf "$scratch"
    "$bin" version --short >/dev/null || die "built helm at $bin does not run"
    echo "$bin"
}

module_dir() {
    # `go mod download -json` prints {"Dir": ...}; it is a no-op once the module is cached.
    local json
    command -v go >/dev/null 2>&1 || die "go is needed to download $1"
    json="$(cd / && GOFLAGS=-mod=mod go mod download -json "$1")" || die "go mod download $1 failed: $json"
    python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["Dir"])' <<<"$json"
}

modules() {
    module_dir "github.com/kedacore/keda/v2@$KEDA_VERSION"
    module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION"
}

# The Debian mirror of this machine's apt sources (deb822 or one-line form).
debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    local uri
    uri="$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list \
        | grep -oE 'https?://[^ ]*/debian/?( |$)' | head -1 | tr -d ' ')" || true
    echo "${uri:-http://deb.debian.org/debian}"
}

RECIPE_LABEL=org.timestamp-pipeline.local-base-recipe

# What the local base image is made from: this function's text and the suite.
base_recipe_hash() {
    { declare -f base_image; echo "$BASE_SUITE"; } | sha256sum | cut -c1-16
}

base_image() {
    if ! command -v buildah >/dev/null 2>&1; then
        say "WARNING: no buildah; not building a local $BASE_IMAGE (the image tests will be skipped)"
        return 0
    fi
    # An image of that name is used as it is, unless this script built it from
    # an older recipe (its label records a hash of the recipe).
    local recipe have
    recipe="$(base_recipe_hash)"
    if have="$(buildah inspect --type image --format \
            '{{index .OCIv1.Config.Labels "'"$RECIPE_LABEL"'"}}' "$BASE_IMAGE" 2>/dev/null)"; then
        if [ -z "$have" ] || [ "$have" = "$recipe" ]; then
            return 0
        fi
        say "local $BASE_IMAGE was built from an older recipe; building it again"
    fi
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is needed to build a local $BASE_IMAGE"
    can_root || die "debootstrap needs root to build a local $BASE_IMAGE"
    local mirror security work rootfs ctr mnt started
    mirror="$(debian_mirror)"
    mirror="${mirror%/}"
    security="${DEBIAN_SECURITY_MIRROR:-${mirror%/debian}/debian-security}"
    work="$(mktemp -d)"
    rootfs="$work/rootfs"
    started=$SECONDS
    say "building a local $BASE_IMAGE: debootstrap --variant=minbase $BASE_SUITE from $mirror (about a minute)"
    if ! "${SUDO[@]}" debootstrap --variant=minbase "$BASE_SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
        tail -30 "$work/debootstrap.log" >&2
        "${SUDO[@]}" rm -rf "$work"
        die "debootstrap failed"
    fi
    # Make it look like Debian's slim image: no docs/man pages/locales, no apt
    # caches or lists, and nothing of this host (hostname, resolv.conf, machine id).
    "${SUDO[@]}" bash -euo pipefail -c '
        root="$1"; mirror="$2"; security="$3"; suite="$4"
        rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
               "$root"/usr/share/locale/* "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
               "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/tmp/* \
               "$root"/etc/hostname "$root"/etc/resolv.conf "$root"/etc/apt/sources.list
        : > "$root/etc/machine-id"
        mkdir -p "$root/etc/dpkg/dpkg.cfg.d" "$root/etc/apt/apt.conf.d" "$root/etc/apt/sources.list.d"
        printf "%s\n" "path-exclude /usr/share/doc/*" "path-include /usr/share/doc/*/copyright" \
            "path-exclude /usr/share/man/*" "path-exclude /usr/share/info/*" \
            "path-exclude /usr/share/locale/*" > "$root/etc/dpkg/dpkg.cfg.d/docker"
        printf "%s\n" "APT::Install-Recommends \"false\";" > "$root/etc/apt/apt.conf.d/docker-no-recommends"
        # As in Debian'"'"'s images: no downloaded packages or package caches are kept.
        printf "%s\n" \
            "DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" \
            "APT::Update::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" \
            "Dir::Cache::pkgcache \"\";" "Dir::Cache::srcpkgcache \"\";" > "$root/etc/apt/apt.conf.d/docker-clean"
        printf "%s\n" "Types: deb" "URIs: $mirror" "Suites: $suite $suite-updates" "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" "" \
            "Types: deb" "URIs: $security" "Suites: $suite-security" "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" > "$root/etc/apt/sources.list.d/debian.sources"
    ' _ "$rootfs" "$mirror" "$security" "$BASE_SUITE"
    ctr="$("${SUDO[@]}" buildah from scratch)"
    mnt="$("${SUDO[@]}" buildah mount "$ctr")"
    "${SUDO[@]}" tar -C "$rootfs" -cf - . | "${SUDO[@]}" tar -C "$mnt" -xpf -
    "${SUDO[@]}" buildah umount "$ctr" >/dev/null
    "${SUDO[@]}" buildah config --cmd /bin/bash \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --label "org.opencontainers.image.description=local stand-in for $BASE_IMAGE, built by debootstrap --variant=minbase $BASE_SUITE" \
        --label "$RECIPE_LABEL=$recipe" \
        "$ctr"
    "${SUDO[@]}" buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
    "${SUDO[@]}" rm -rf "$work"
    say "local $BASE_IMAGE ready in $((SECONDS - started)) s"
}

case "${1:-all}" in
    all)
        packages
        helm >/dev/null
        modules >/dev/null
        base_image
        ;;
    packages) packages ;;
    helm) helm ;;
    modules) modules ;;
    base-image) base_image ;;
    *) die "unknown step '$1' (all|packages|helm|modules|base-image)" ;;
esac
