#!/usr/bin/env bash
# The Docker networking story, told with this suite's plugins and the real cnitool,
# entirely inside network namespaces this script creates (the machine's own network is
# never touched). Run by `make demo` after a release build.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${RUNTIME:-}" in
    "" | cnitool) ;;
    nerdctl) exec "$REPO/scripts/demo-nerdctl.sh" ;;
    *) echo "RUNTIME=$RUNTIME: known are cnitool (default) and nerdctl" >&2; exit 2 ;;
esac
CNITOOL="${CNITOOL:-$REPO/.cache/bin/cnitool}"
[ -x "$CNITOOL" ] || { echo "cnitool missing: run scripts/install-deps.sh" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "make demo needs root (network namespaces)" >&2; exit 1; }

TMP="$(mktemp -d /tmp/cni-demo.XXXXXX)"
ID="d$$"
HOST="${ID}-host"
NAMESPACES=("$HOST")
PIDS=()

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
run() { printf '   $ %s\n' "$*"; "$@" 2>&1 | sed 's/^/     /'; }

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    if [ -f "$TMP/state/dns/daemon.pid" ]; then kill "$(cat "$TMP/state/dns/daemon.pid")" 2>/dev/null; fi
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # so the EXIT trap also runs when interrupted

bold "Installing the plugins into a temp dir (as into /opt/cni/bin)"
make -s -C "$REPO" install PREFIX="$TMP/bin" >/dev/null
run ls "$TMP/bin"

mkdir -p "$TMP/net.d" "$TMP/state" "$TMP/libcni"
ip netns add "$HOST"
ip -n "$HOST" link set lo up

# Every runtime call happens inside the private host namespace, with all state in $TMP.
# cnitool keeps a result cache in /var/lib/cni: bind-mount it away. `ip netns exec` already
# runs in its own mount namespace (a slave of the machine's, so namespaces created later
# still appear in /var/run/netns for the DNS daemon started from it).
mkdir -p /var/lib/cni
cni() {  # cni add|check|del NETWORK CONTAINER [CNI_ARGS] [CAP_ARGS]
    local op=$1 net=$2 ctr=$3 args=${4:-} cap=${5:-}
    ip netns exec "$HOST" sh -c 'mount --bind "$0" /var/lib/cni && exec "$@"' "$TMP/libcni" \
        env NETCONFPATH="$TMP/net.d" CNI_PATH="$TMP/bin" CNI_SUITE_STATE_DIR="$TMP/state" \
        CNI_ARGS="$args" CAP_ARGS="$cap" "$CNITOOL" "$op" "$net" "/var/run/netns/${ID}-$ctr"
}
container() { ip netns add "${ID}-$1"; NAMESPACES+=("${ID}-$1"); }
in_ctr() { local c=$1; shift; ip netns exec "${ID}-$c" "$@"; }
addr_of() { in_ctr "$1" ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }

network() {  # network NAME BRIDGE SUBNET
    cat > "$TMP/net.d/$1.conflist" <<JSON
{ "cniVersion": "1.0.0", "name": "$1", "plugins": [
  { "type": "bridge", "bridge": "$2", "isGateway": true, "isDefaultGateway": true, "ipMasq": true, "hairpinMode": true,
    "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$3" }]], "dataDir": "$TMP/state/ipam" } },
  { "type": "portmap", "capabilities": { "portMappings": true } },
  { "type": "dns-alias", "capabilities": { "aliases": true } } ] }
JSON
}

bold "docker network create --subnet 10.0.0.0/24 mynet   (and a second one, othernet)"
network mynet cni-mynet 10.0.0.0/24
network othernet cni-other 10.0.1.0/24
say "two conflists: bridge + portmap + dns-alias each"

bold "docker run --name db --network mynet --network-alias database ..."
container db
cni add mynet db "K8S_POD_NAME=db" '{"aliases":["database"]}' >/dev/null
say "db got $(addr_of db)"

bold "docker run --name web --network mynet -p 8080:80 ..."
container web
cni add mynet web "K8S_POD_NAME=web" '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}' >/dev/null
say "web got $(addr_of web)"
mkdir -p "$TMP/www"; echo "hello from the web container" > "$TMP/www/index.html"
# Started directly (not through a shell function) so $! is httpd itself: `ip netns exec` execs it.
ip netns exec "${ID}-web" busybox httpd -f -p 80 -h "$TMP/www" & PIDS+=($!)
sleep 0.3

bold "web reaches db by name and by alias (embedded DNS at 127.0.0.11)"
run in_ctr web dig +short @127.0.0.11 db
run in_ctr web dig +short @127.0.0.11 database
run in_ctr web ping -c1 -W1 "$(in_ctr web dig +short @127.0.0.11 db | head -1)"

bold "docker run --name intruder --network othernet ...: another network cannot see mynet"
container intruder
cni add othernet intruder "K8S_POD_NAME=intruder" >/dev/null
say "intruder got $(addr_of intruder)"
run in_ctr intruder dig +noall +comments @127.0.0.11 db
if in_ctr intruder ping -c1 -W1 "$(addr_of db)" >/dev/null 2>&1; then
    say "UNEXPECTED: intruder reached db"; exit 1
else
    say "ping $(addr_of db) from intruder: no answer (networks are isolated)"
fi

bold "The published port answers from the host: 127.0.0.1:8080 and the host's own address"
ip -n "$HOST" link add uplink type veth peer name uplink-peer
ip -n "$HOST" addr add 192.0.2.1/24 dev uplink; ip -n "$HOST" link set uplink up
run ip netns exec "$HOST" busybox wget -qO- http://127.0.0.1:8080/
run ip netns exec "$HOST" busybox wget -qO- http://192.0.2.1:8080/

bold "docker run --name web2 -p 8080:80 ...: the port is taken"
container web2
if out=$(cni add mynet web2 "K8S_POD_NAME=web2" '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}' 2>&1); then
    say "UNEXPECTED: second container got port 8080"; exit 1
fi
# cnitool 1.3 (cobra) follows the error line with its usage text: show the error only.
say "${out%%$'\n'*}"
cni del mynet web2 "K8S_POD_NAME=web2" '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
run ip netns exec "$HOST" busybox wget -qO- http://127.0.0.1:8080/

bold "docker rm -f web db intruder: everything is removed"
cni del mynet web "K8S_POD_NAME=web" '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
cni del mynet db "K8S_POD_NAME=db" '{"aliases":["database"]}'
cni del othernet intruder "K8S_POD_NAME=intruder"
ip -n "$HOST" link del uplink
say "links left in the host namespace: $(ip -n "$HOST" -o link show | awk -F': ' '{print $2}' | grep -v '^lo$' | tr '\n' ' ')"
say "our nftables tables left: $(ip netns exec "$HOST" nft list tables | grep -c cni_ || true)"
say "state files left: $(find "$TMP/state" -type f ! -name lock | wc -l)"
bold "Done."
