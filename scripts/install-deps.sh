#!/usr/bin/env bash
# Install what the integration tests need on a Debian 12 (bookworm) machine,
# and build the real `cnitool` offline from Debian's own packages.
#
# Idempotent: packages already installed are not touched, `apt-get update`
# runs at most once and only when something is missing, and cnitool is only
# built when $REPO/.cache/bin/cnitool does not exist yet.
# Non-interactive (safe for CI=true with no stdin). Needs root only when it
# actually has to install something.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$REPO/.cache"
CNITOOL="$CACHE/bin/cnitool"
SRC_PKG="golang-github-appc-cni"

PACKAGES=(
    golang-go                      # builds cnitool
    golang-github-appc-cni-dev     # libcni sources for cnitool (GOPATH mode)
    containernetworking-plugins    # reference plugins in /usr/lib/cni
    nftables iptables              # firewall backends and inspection
    iproute2                       # ip netns / link / addr
    iputils-ping                   # reachability checks in tests
    dnsutils                       # dig, for dns-alias tests
    conntrack                      # conntrack inspection/flush
    strace                         # crash-consistency tests: SIGKILL at a chosen syscall
    busybox-static                 # tiny rootfs / nc / httpd for tests
    dpkg-dev                       # dpkg-source, to unpack the cnitool source
    hyperfine                      # benchmarks
    podman                         # e2e tests: real runtime, CNI backend (pulls conmon, containers-common)
    runc                           # e2e tests: OCI runtime for podman and containerd (crun refuses this host's hybrid cgroups)
    containerd                     # e2e tests: `ctr run --cni` (pulls containerd-shim-runc-v2)
)

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 -q)
LOG="$(mktemp /tmp/install-deps.XXXXXX.log)"

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
trap 'rm -f "$LOG"' EXIT

need_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 needs root (re-run as root or with sudo)"
}

# (No `cmd | grep -q` here: with pipefail, grep exiting early makes the
# writer die of SIGPIPE and the whole test look false.)
is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == *"install ok installed"* ]]
}

# --- 1. what is missing --------------------------------------------------
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 only"

missing=()
for p in "${PACKAGES[@]}"; do
    is_installed "$p" || missing+=("$p")
done

build_cnitool=0
[ -x "$CNITOOL" ] || build_cnitool=1

need_update=0
[ "${#missing[@]}" -eq 0 ] || need_update=1

# --- 2. deb-src twin of the Debian apt source (only to build cnitool) ----
has_src_index() {
    [[ "$(apt-cache showsrc "$SRC_PKG" 2>/dev/null || true)" == *"Package: $SRC_PKG"* ]]
}

ensure_deb_src() {
    local twin
    if grep -qsE '^[[:space:]]*(deb-src|Types:.*deb-src)' /etc/apt/sources.list \
            /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; then
        return 0    # some deb-src entry already exists
    fi
    need_root "adding a deb-src apt source"
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        # deb822: same stanzas, Types: deb -> deb-src, in a separate file.
        twin=/etc/apt/sources.list.d/debian-src.sources
        sed -E 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb-src/' \
            /etc/apt/sources.list.d/debian.sources > "$twin"
    elif grep -qsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list; then
        # one-line format: every "deb ..." line gets a "deb-src ..." twin.
        twin=/etc/apt/sources.list.d/debian-src.list
        sed -nE 's/^[[:space:]]*deb[[:space:]]+/deb-src /p' /etc/apt/sources.list > "$twin"
    else
        die "no Debian apt source found (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)"
    fi
    say "added deb-src source $twin"
}

if [ "$build_cnitool" -eq 1 ]; then
    ensure_deb_src
    has_src_index || need_update=1
fi

# --- 3. apt-get update (at most once) and install ------------------------
if [ "$need_update" -eq 1 ]; then
    need_root "apt-get update"
    say "apt-get update"
    quiet "apt-get update failed" apt-get "${APT_OPTS[@]}" update
fi

if [ "${#missing[@]}" -gt 0 ]; then
    need_root "installing packages"
    say "installing: ${missing[*]}"
    quiet "apt-get install failed for: ${missing[*]}" \
        apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "${missing[@]}"
else
    say "all ${#PACKAGES[@]} packages already installed"
fi

# --- 4. cnitool from Debian's source package ------------------------------
if [ "$build_cnitool" -eq 0 ]; then
    say "cnitool present: $CNITOOL"
    exit 0
fi

has_src_index || die "apt has no source index for $SRC_PKG even after apt-get update"

srcdir="$CACHE/deb-src"
mkdir -p "$srcdir" "$CACHE/bin"
if ! ls "$srcdir"/"${SRC_PKG}"_*.dsc >/dev/null 2>&1; then
    say "downloading source package $SRC_PKG into $srcdir"
    quiet "apt-get source --download-only $SRC_PKG failed" \
        env -C "$srcdir" apt-get "${APT_OPTS[@]}" source --download-only "$SRC_PKG"
fi
dsc="$(ls -1 "$srcdir"/"${SRC_PKG}"_*.dsc | sort -V | tail -n1)"

work="$(mktemp -d)"
trap 'rm -rf "$work" "$LOG"' EXIT
# dpkg-source applies Debian's patches, so we build exactly what Debian ships.
quiet "dpkg-source could not unpack $dsc" dpkg-source --no-check -x "$dsc" "$work/src"
[ -f "$work/src/cnitool/cnitool.go" ] || die "cnitool/cnitool.go not found in $dsc"

say "building cnitool from $(basename "$dsc") (GOPATH mode, offline)"
quiet "go build of cnitool failed" \
    env -C "$work/src/cnitool" GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off \
        GOFLAGS= GOCACHE="$work/go-build" go build -o "$CNITOOL.tmp" cnitool.go
mv -f "$CNITOOL.tmp" "$CNITOOL"
say "built $CNITOOL"
