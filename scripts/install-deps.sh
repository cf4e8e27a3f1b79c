#!/usr/bin/env bash
# Install what the tests, the demo and the benchmarks need on a Debian 12 (bookworm)
# machine: Debian packages, then the real CNI clients at pinned versions, built from the
# Go module proxy into $REPO/.cache (gitignored):
#
#   cnitool     containernetworking/cni  (libcni: 1.1.0 results, GC, STATUS)  .cache/bin/
#   reference   containernetworking/plugins, every plugin           .cache/reference-plugins/
#   containerd  containerd, containerd-shim-runc-v2, ctr (runc is Debian's)  .cache/runtime/bin/
#   cri         crictl and critest from cri-tools                   .cache/runtime/bin/
#   nerdctl     nerdctl                                             .cache/runtime/bin/
#
# Usage: install-deps.sh [COMPONENT...]   (no argument: all of them; `make demo` asks for
# cnitool only, `make demo RUNTIME=nerdctl` for cnitool, containerd and nerdctl).
#
# Idempotent: packages already installed are not touched, `apt-get update` runs at most
# once and only when something is missing and the install needs it (scripts/apt.sh, shared
# with scripts/bench.sh), and a component is built only when its
# binaries or its version stamp (.cache/stamps/<component>) do not match the pin below.
# A second run builds nothing. Non-interactive (safe for CI=true with no stdin). Needs
# root only when it has to install packages. Needs Go >= 1.26.8 (go.mod of the pins).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$REPO/.cache"
STAMPS="$CACHE/stamps"
RUNTIME_BIN="$CACHE/runtime/bin"
REFERENCE_DIR="$CACHE/reference-plugins"

# Pinned versions (what the Go module proxy serves).
CNI_VERSION=v1.3.1            # github.com/containernetworking/cni (cnitool)
PLUGINS_VERSION=v1.10.0       # github.com/containernetworking/plugins
CONTAINERD_VERSION=v2.4.2     # github.com/containerd/containerd/v2
CRI_TOOLS_VERSION=v1.37.0     # sigs.k8s.io/cri-tools
NERDCTL_VERSION=v2.3.5        # github.com/containerd/nerdctl/v2
GO_MIN=1.26.8                 # the newest `go` line among the pins' go.mod files

PACKAGES=(
    containernetworking-plugins    # Debian's reference plugins in /usr/lib/cni (dns tests)
    nftables iptables              # firewall backends and inspection
    iproute2                       # ip netns / link / addr
    iputils-ping                   # reachability checks in tests
    dnsutils                       # dig, for dns-alias tests
    conntrack                      # conntrack inspection/flush
    strace                         # crash-consistency tests: SIGKILL at a chosen syscall
    busybox-static                 # tiny rootfs / nc / httpd for tests and images
    hyperfine                      # benchmarks
    podman                         # e2e tests: real runtime, CNI backend (pulls conmon, containers-common)
    runc                           # e2e tests: OCI runtime for podman, containerd and nerdctl
)

ALL_COMPONENTS=(cnitool reference containerd cri nerdctl)

LOG="$(mktemp /tmp/install-deps.XXXXXX.log)"
WORK=""

say() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: ERROR: %s\n' "$*" >&2; exit 1; }
# Run quietly; on failure show the command's output, then die with $1.
quiet() {
    local msg="$1"; shift
    if ! "$@" >"$LOG" 2>&1; then
        tail -n 40 "$LOG" >&2
        die "$msg"
    fi
}
cleanup() { rm -f "$LOG"; [ -z "$WORK" ] || rm -rf "$WORK"; }
trap cleanup EXIT

# apt_install_missing and friends, shared with scripts/bench.sh.
APT_WHO=install-deps APT_LOG="$LOG"
# shellcheck source=scripts/apt.sh
. "$REPO/scripts/apt.sh"

need_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 needs root (re-run as root or with sudo)"
}

# --- 0. which components --------------------------------------------------
components=("$@")
[ "${#components[@]}" -gt 0 ] || components=("${ALL_COMPONENTS[@]}")
for c in "${components[@]}"; do
    case " ${ALL_COMPONENTS[*]} " in
        *" $c "*) ;;
        *) die "unknown component '$c' (known: ${ALL_COMPONENTS[*]})" ;;
    esac
done

# --- 1. Debian packages ----------------------------------------------------
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 only"

apt_missing "${PACKAGES[@]}"
if [ "${#APT_MISSING[@]}" -gt 0 ]; then
    need_root "installing packages"
    apt_install_missing "${PACKAGES[@]}" || die "apt-get install failed for: ${APT_MISSING[*]}"
else
    say "all ${#PACKAGES[@]} packages already installed"
fi

# --- 2. Go builds ----------------------------------------------------------
# A component is up to date when its stamp holds its pinned version and every binary it
# installs is there.
stamp_ok() {  # stamp_ok NAME VERSION FILE...
    local name=$1 version=$2; shift 2
    [ "$(cat "$STAMPS/$name" 2>/dev/null || true)" = "$version" ] || return 1
    local f
    for f in "$@"; do [ -x "$f" ] || return 1; done
}
stamp() { mkdir -p "$STAMPS"; printf '%s\n' "$2" > "$STAMPS/$1"; }

GO=""
setup_go() {
    [ -z "$GO" ] || return 0
    GO="$(command -v go || true)"
    [ -n "$GO" ] || [ ! -x /usr/local/go/bin/go ] || GO=/usr/local/go/bin/go
    [ -n "$GO" ] || die "go not found (need Go >= $GO_MIN on PATH or in /usr/local/go)"
    local have
    have="$("$GO" env GOVERSION)"; have="${have#go}"
    if [ "$(printf '%s\n%s\n' "$GO_MIN" "$have" | sort -V | head -n1)" != "$GO_MIN" ]; then
        die "$GO is Go $have; the pinned modules need Go >= $GO_MIN"
    fi
    # Static binaries, no VCS stamping (module zips have no .git), the installed toolchain
    # only, and Go's own caches (shared by every checkout on this machine); a HOME-less
    # environment gets caches under .cache.
    export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath" GOTOOLCHAIN=local
    if [ -z "$("$GO" env GOCACHE 2>/dev/null || true)" ]; then export GOCACHE="$CACHE/go/build"; fi
    if [ -z "$("$GO" env GOMODCACHE 2>/dev/null || true)" ]; then export GOMODCACHE="$CACHE/go/mod"; fi
    WORK="$(mktemp -d /tmp/install-deps.XXXXXX)"
    say "using $GO (Go $have)"
}

# The module's directory in the module cache (downloaded if needed).
mod_dir() {  # mod_dir MODULE@VERSION
    quiet "go mod download $1 failed" env -C "$WORK" "$GO" mod download -json "$1"
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$LOG"
}

# Times each build, so a slow cold run shows where its minutes went.
timed() {  # timed WHAT CMD...
    local what=$1 start=$SECONDS; shift
    "$@"
    say "built $what in $((SECONDS - start)) s"
}

build_cnitool() {
    local bin="$CACHE/bin/cnitool"
    if stamp_ok cnitool "$CNI_VERSION" "$bin"; then say "cnitool $CNI_VERSION present"; return; fi
    setup_go
    mkdir -p "$CACHE/bin"
    rm -f "$bin"   # an older cnitool (Debian's libcni 1.1.2 build) is replaced
    timed "cnitool $CNI_VERSION" quiet "building cnitool failed" \
        env GOBIN="$CACHE/bin" "$GO" install -ldflags="-s -w" \
        "github.com/containernetworking/cni/cnitool@$CNI_VERSION"
    stamp cnitool "$CNI_VERSION"
}

build_reference() {
    if stamp_ok reference "$PLUGINS_VERSION" "$REFERENCE_DIR/bridge" "$REFERENCE_DIR/loopback"; then
        say "reference plugins $PLUGINS_VERSION present"; return
    fi
    setup_go
    rm -rf "$REFERENCE_DIR.tmp"; mkdir -p "$REFERENCE_DIR.tmp"
    timed "reference plugins $PLUGINS_VERSION" quiet "building the reference plugins failed" \
        env GOBIN="$REFERENCE_DIR.tmp" "$GO" install \
        -ldflags="-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$PLUGINS_VERSION" \
        "github.com/containernetworking/plugins/plugins/...@$PLUGINS_VERSION"
    rm -f "$REFERENCE_DIR.tmp/sample"   # the spec's example plugin, not a real one
    rm -rf "$REFERENCE_DIR"; mv "$REFERENCE_DIR.tmp" "$REFERENCE_DIR"
    stamp reference "$PLUGINS_VERSION"
}

build_containerd() {
    local bins=("$RUNTIME_BIN/containerd" "$RUNTIME_BIN/containerd-shim-runc-v2" "$RUNTIME_BIN/ctr")
    if stamp_ok containerd "$CONTAINERD_VERSION" "${bins[@]}"; then
        say "containerd $CONTAINERD_VERSION present"; return
    fi
    setup_go
    mkdir -p "$RUNTIME_BIN"
    local m=github.com/containerd/containerd/v2
    timed "containerd $CONTAINERD_VERSION" quiet "building containerd failed" \
        env GOBIN="$RUNTIME_BIN" "$GO" install \
        -ldflags="-s -w -X $m/version.Version=$CONTAINERD_VERSION" \
        "$m/cmd/containerd@$CONTAINERD_VERSION" \
        "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
        "$m/cmd/ctr@$CONTAINERD_VERSION"
    stamp containerd "$CONTAINERD_VERSION"
}

build_cri() {
    if stamp_ok cri "$CRI_TOOLS_VERSION" "$RUNTIME_BIN/crictl" "$RUNTIME_BIN/critest"; then
        say "crictl and critest $CRI_TOOLS_VERSION present"; return
    fi
    setup_go
    mkdir -p "$RUNTIME_BIN"
    local m=sigs.k8s.io/cri-tools ldflags
    ldflags="-s -w -X $m/pkg/version.Version=$CRI_TOOLS_VERSION"
    timed "crictl $CRI_TOOLS_VERSION" quiet "building crictl failed" \
        env GOBIN="$RUNTIME_BIN" "$GO" install -ldflags="$ldflags" "$m/cmd/crictl@$CRI_TOOLS_VERSION"
    # critest is a compiled Ginkgo test binary (what cri-tools' Makefile builds).
    local dir
    dir="$(mod_dir "$m@$CRI_TOOLS_VERSION")"
    [ -d "$dir/cmd/critest" ] || die "cmd/critest not found in $m@$CRI_TOOLS_VERSION ($dir)"
    timed "critest $CRI_TOOLS_VERSION" quiet "building critest failed" \
        env -C "$dir" "$GO" test -c -ldflags="$ldflags" -o "$RUNTIME_BIN/critest" ./cmd/critest
    stamp cri "$CRI_TOOLS_VERSION"
}

build_nerdctl() {
    if stamp_ok nerdctl "$NERDCTL_VERSION" "$RUNTIME_BIN/nerdctl"; then
        say "nerdctl $NERDCTL_VERSION present"; return
    fi
    setup_go
    mkdir -p "$RUNTIME_BIN"
    local m=github.com/containerd/nerdctl/v2 dir src
    dir="$(mod_dir "$m@$NERDCTL_VERSION")"
    # nerdctl's go.mod replaces its test framework (mod/tigron, a nested module) with a
    # directory the module zip does not carry, and one non-test file of the CLI's helpers
    # (testing_linux.go, compose helpers for nerdctl's own tests) imports it. Build a copy
    # without that file and with an empty module standing in for the directory.
    src="$WORK/nerdctl"
    cp -r "$dir" "$src"; chmod -R u+w "$src"
    rm -f "$src/cmd/nerdctl/helpers/testing_linux.go"
    mkdir -p "$src/mod/tigron"
    printf 'module github.com/containerd/nerdctl/mod/tigron\n\ngo 1.24\n' > "$src/mod/tigron/go.mod"
    timed "nerdctl $NERDCTL_VERSION" quiet "building nerdctl failed" \
        env -C "$src" "$GO" build -ldflags="-s -w -X $m/pkg/version.Version=$NERDCTL_VERSION" \
        -o "$RUNTIME_BIN/nerdctl" ./cmd/nerdctl
    stamp nerdctl "$NERDCTL_VERSION"
}

start=$SECONDS
for c in "${components[@]}"; do "build_$c"; done
[ $((SECONDS - start)) -lt 5 ] || say "Go builds took $((SECONDS - start)) s"
