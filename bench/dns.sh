#!/usr/bin/env bash
# Container DNS throughput and latency: our dns-alias daemon vs dnsmasq (what podman's old
# dnsname plugin ran) vs aardvark-dns (podman/netavark), measured with dnsperf.
#
# Everything runs in three private network namespaces this script creates and deletes:
#   <tag>h   "host": bridge br0 with 10.90.0.1/16 (dnsmasq listens there) and 10.90.0.3/16
#            (aardvark-dns); our daemon runs here too, answering inside <tag>c1.
#   <tag>c1  container asking ours: eth0 10.90.0.2, dnsperf -> 127.0.0.11 (our nft DNAT).
#   <tag>c2  container asking the others: eth0 10.90.0.4 (no nft table, no conntrack).
# The three servers hold the same names (the client + ctr1..ctr100); the query mix is A
# lookups of ctr1..ctr100. The servers run side by side and are measured in turns, ROUNDS
# times, so load from elsewhere on the machine hits all of them alike; the table shows the
# median of the rounds. Per turn: a throughput run (dnsperf -l $DUR, $CLIENTS sockets x
# $OUTSTANDING queries in flight) and a latency run at a fixed $RATE q/s for $LAT_DUR s, whose
# per-answer latencies (dnsperf -v) give p50/p99.
# Bounded: ROUNDS x 3 x (DUR + LAT_DUR) seconds plus a few seconds of setup. Only processes
# this script started are stopped, by PID. Needs root, dnsperf, dnsmasq-base, aardvark-dns,
# dnsutils, nftables, iproute2 (apt-get install -y dnsperf dnsmasq-base aardvark-dns;
# scripts/bench.sh installs them). Without dnsmasq or aardvark-dns the others still run and
# the missing one is named in a "- left out: ..." line under the table.
#
#   bench/dns.sh                     # build release, run, print a markdown table
#   ROUNDS=1 DUR=10 bench/dns.sh     # one 10 s turn each
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
DUR="${DUR:-5}"
LAT_DUR="${LAT_DUR:-3}"
RATE="${RATE:-10000}"
CLIENTS="${CLIENTS:-4}"
OUTSTANDING="${OUTSTANDING:-100}"
N="${NAMES:-100}"
AARDVARK="${AARDVARK:-/usr/lib/podman/aardvark-dns}"
DNSMASQ="${DNSMASQ:-$(command -v dnsmasq || echo /usr/sbin/dnsmasq)}"

die() { echo "bench/dns.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
for t in dnsperf dig ip nft; do command -v "$t" >/dev/null || die "$t not found (apt-get install -y dnsperf dnsutils iproute2 nftables)"; done
LEFT_OUT=()
HAVE_DNSMASQ=1 HAVE_AARDVARK=1
[ -x "$DNSMASQ" ] || { HAVE_DNSMASQ=0; LEFT_OUT+=("DNS dnsmasq: not found at $DNSMASQ (apt-get install -y dnsmasq-base)"); }
[ -x "$AARDVARK" ] || { HAVE_AARDVARK=0; LEFT_OUT+=("DNS aardvark-dns: not found at $AARDVARK (apt-get install -y aardvark-dns)"); }

if [ -z "${DNS_ALIAS:-}" ]; then
    (cd "$REPO" && cargo build --release -q -p cni-dns-alias) || die "cargo build failed"
    DNS_ALIAS="${CARGO_TARGET_DIR:-$REPO/target}/release/dns-alias"
fi
[ -x "$DNS_ALIAS" ] || die "dns-alias binary not found: $DNS_ALIAS"

TAG="dnsb$$"
H="${TAG}h"
C1="${TAG}c1"
C2="${TAG}c2"
TMP="$(mktemp -d "/tmp/${TAG}.XXXXXX")"
STATE="$TMP/state"
PIDS=()

running() { # pid: alive and not a zombie
    local st
    st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo gone)"
    [ "$st" != gone ] && [ "$st" != Z ]
}

cleanup() {
    set +e
    local p f
    for f in "$STATE/dns/daemon.pid" "$TMP/aardvark/aardvark.pid"; do
        [ -f "$f" ] && PIDS+=("$(cat "$f")")
    done
    for p in "${PIDS[@]}"; do running "$p" && kill "$p" 2>/dev/null; done
    sleep 0.3
    for p in "${PIDS[@]}"; do running "$p" && kill -9 "$p" 2>/dev/null; done
    for n in "$C1" "$C2" "$H"; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# --- namespaces -------------------------------------------------------------------------
for n in "$H" "$C1" "$C2"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n "$H" link add br0 type bridge
ip -n "$H" addr add 10.90.0.1/16 dev br0
ip -n "$H" addr add 10.90.0.3/16 dev br0
ip -n "$H" link set br0 up
i=0
for pair in "$C1 10.90.0.2" "$C2 10.90.0.4"; do
    set -- $pair
    i=$((i + 1))
    ip -n "$H" link add "vc$i" type veth peer name eth0 netns "$1"
    ip -n "$H" link set "vc$i" master br0 up
    ip -n "$1" addr add "$2/16" dev eth0
    ip -n "$1" link set eth0 up
done

# --- the same names for all three -------------------------------------------------------
: > "$TMP/queries"
printf '10.90.0.4 client\n' > "$TMP/hosts"
mkdir -p "$TMP/aardvark"
{ printf '10.90.0.3\n'; printf '%064d 10.90.0.4  client\n' 0; } > "$TMP/aardvark/bench"
for i in $(seq 1 "$N"); do
    printf 'ctr%d A\n' "$i" >> "$TMP/queries"
    printf '10.90.%d.%d ctr%d\n' $((1 + i / 250)) $((1 + i % 250)) "$i" >> "$TMP/hosts"
    printf '%064d 10.90.%d.%d  ctr%d\n' "$i" $((1 + i / 250)) $((1 + i % 250)) "$i" >> "$TMP/aardvark/bench"
done

# ours: dns-alias ADD as a runtime calls it, chained (the prevResult names the address).
our_add() { # container-id name ip
    local conf
    conf=$(printf '{"cniVersion":"1.0.0","name":"bench","type":"dns-alias","upstreams":["10.90.0.1"],"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/%s"}],"ips":[{"address":"%s/16","interface":0}]}}' "$C1" "$3")
    echo "$conf" | ip netns exec "$H" env -i PATH="$PATH" CNI_SUITE_STATE_DIR="$STATE" CNI_COMMAND=ADD \
        CNI_CONTAINERID="$1" CNI_NETNS="/var/run/netns/$C1" CNI_IFNAME=eth0 CNI_PATH="$(dirname "$DNS_ALIAS")" \
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=$2" "$DNS_ALIAS" > "$TMP/add.out" \
        || die "dns-alias ADD failed: $(cat "$TMP/add.out")"
}
t0=$(date +%s%N)
our_add client0000000000000 client 10.90.0.2
t1=$(date +%s%N)
for i in $(seq 1 "$N"); do
    our_add "$(printf 'ctr%012d' "$i")" "ctr$i" "10.90.$((1 + i / 250)).$((1 + i % 250))"
done
t2=$(date +%s%N)
echo "dns-alias ADD: first (starts the daemon) $(( (t1 - t0) / 1000000 )) ms, then $(( (t2 - t1) / N / 1000 )) us each (incl. ip netns exec)" >&2

if [ "$HAVE_DNSMASQ" = 1 ]; then
    ip netns exec "$H" "$DNSMASQ" --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
        --listen-address=10.90.0.1 --user=root --addn-hosts="$TMP/hosts" --local-ttl=0 2>"$TMP/dnsmasq.log" &
    PIDS+=($!)
fi
if [ "$HAVE_AARDVARK" = 1 ]; then
    ip netns exec "$H" "$AARDVARK" --config "$TMP/aardvark" -p 53 run >"$TMP/aardvark.log" 2>&1 \
        || die "aardvark-dns did not start: $(cat "$TMP/aardvark.log")"
fi

check_answer() { # ns server
    local got="" _
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        got=$(ip netns exec "$1" dig +time=1 +tries=1 +short "@$2" ctr42 A 2>/dev/null || true)
        [ "$got" = "10.90.1.43" ] && return 0
        sleep 0.2
    done
    die "server $2 does not answer ctr42 correctly in $1 (got '$got')"
}
check_answer "$C1" 127.0.0.11
[ "$HAVE_DNSMASQ" = 0 ] || check_answer "$C2" 10.90.0.1
[ "$HAVE_AARDVARK" = 0 ] || check_answer "$C2" 10.90.0.3

# --- measuring --------------------------------------------------------------------------
# One turn: prints "qps lost p50_us p99_us".
turn() { # ns server
    local out qps lost
    out=$(ip netns exec "$1" dnsperf -s "$2" -d "$TMP/queries" -l "$DUR" -c "$CLIENTS" -q "$OUTSTANDING" -t 2 2>&1) \
        || die "dnsperf against $2 failed: $out"
    qps=$(awk '/Queries per second:/ {printf "%.0f", $4}' <<<"$out")
    lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    # -v prints one line per answer; written to a file (not a pipe) so no filter competes
    # for CPU during the run.
    ip netns exec "$1" dnsperf -s "$2" -d "$TMP/queries" -l "$LAT_DUR" -Q "$RATE" -t 2 -v > "$TMP/verbose" 2>/dev/null || true
    awk '$1 == ">" && $2 == "NOERROR" {print $NF}' "$TMP/verbose" | sort -g > "$TMP/lat"
    awk -v q="$qps" -v l="$lost" '{v[NR]=$1} END {
        if (NR == 0) { print q, l, "n/a", "n/a"; exit }
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        printf "%s %s %.0f %.0f\n", q, l, v[i50] * 1e6, v[i99] * 1e6 }' "$TMP/lat"
}

LABELS=("dns-alias (ours)" "dnsmasq" "aardvark-dns")
[ "$HAVE_DNSMASQ" = 0 ] || LABELS[1]="dnsmasq $("$DNSMASQ" --version | awk 'NR==1 {print $3}')"
[ "$HAVE_AARDVARK" = 0 ] || LABELS[2]="aardvark-dns $("$AARDVARK" --version 2>/dev/null | awk '{print $2}')"
NSS=("$C1" "$C2" "$C2")
SERVERS=(127.0.0.11 10.90.0.1 10.90.0.3)
LANES=(0)
[ "$HAVE_DNSMASQ" = 0 ] || LANES+=(1)
[ "$HAVE_AARDVARK" = 0 ] || LANES+=(2)
echo "dns bench: $N names, $ROUNDS rounds; per turn ${DUR}s of $CLIENTS dnsperf sockets x $OUTSTANDING in flight, then ${LAT_DUR}s at $RATE q/s" >&2
for r in $(seq 1 "$ROUNDS"); do
    for k in "${LANES[@]}"; do
        res=$(turn "${NSS[$k]}" "${SERVERS[$k]}")
        echo "$k $res" >> "$TMP/results"
        echo "  round $r ${LABELS[$k]}: $res (q/s lost p50us p99us)" >&2
    done
done

median() { sort -g | awk '{v[NR]=$1} END {print (NR ? v[int((NR + 1) / 2)] : "n/a")}'; }
echo
echo "| server | queries/s (median of $ROUNDS) | lost | p50 µs @ ${RATE} q/s | p99 µs @ ${RATE} q/s |"
echo "|---|---:|---:|---:|---:|"
for k in "${LANES[@]}"; do
    col() { awk -v k="$k" -v c="$1" '$1 == k {print $c}' "$TMP/results" | median; }
    lost=$(awk -v k="$k" '$1 == k {s += $3} END {print s + 0}' "$TMP/results")
    echo "| ${LABELS[$k]} | $(col 2) | $lost | $(col 4) | $(col 5) |"
done
if [ "${#LEFT_OUT[@]}" -gt 0 ]; then
    echo
    printf -- '- left out: %s\n' "${LEFT_OUT[@]}"
fi
