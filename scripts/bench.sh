#!/usr/bin/env bash
# `make bench`: our plugins against the reference plugins v1.10 (iptables, and their nftables
# backends) and netavark 2.x, side by side and interleaved in one run. Writes
# docs/benchmarks/{results.md,latency.png,raw.csv,summary.csv,trace.csv}.
#
# The Makefile has already built the release binaries (target/release) and run
# scripts/install-deps.sh. The measuring is done by $BIN_DIR/cni-bench
# (integration/src/bin/cni-bench.rs); this script adds the machine description, a look at
# where process start-up time goes (perf stat), the IPAM and DNS benches when they exist,
# and the plot. It installs the Debian packages it uses itself (scripts/apt.sh) and builds
# netavark 2.x into .cache when it is missing. Every lane that did not run is named, with
# the reason, in the "Left out" section of results.md: nothing is left out silently.
#
# Safety: nothing runs in the machine's own network namespace. cni-bench makes private
# namespaces named "$TAG-*"; this script sweeps that prefix again on exit (also on Ctrl-C or
# failure) and removes its temp dir. Only processes this script started are signalled, by PID.
#
# Knobs (environment): LEVELS=0,100,500,1000  SAMPLES=20 (or one per level, e.g. 20,20,15,10)
#   STARTUP_RUNS=500  SCENARIOS=startup,bridge,portmap  OURS_IPTABLES=0  OURS_UDP=1 (the
#   portmap scenario's ours-udp lane: our plugins with a UDP mapping)
#   IPAM_BENCH=1  IPAM_LEVELS, IPAM_SAMPLES=100, IPAM_BUDGET=15 (fill_bench's --levels,
#   --samples and --budget, seconds per level and op for the reference; IPAM_LEVELS unset =
#   fill_bench's 0,20000,40000,60000 leases)
#   DNS_BENCH=1 (ROUNDS, DUR, ... of bench/dns.sh pass through the environment)
#   REFERENCE=.cache/reference-plugins (v1.10 from scripts/install-deps.sh; else /usr/lib/cni)
#   NETAVARK=.cache/netavark/bin/netavark (built with `cargo install netavark --version ^2`
#   when missing, ~15-20 min on 2 cores; NETAVARK=none skips it)
#   SCALE=1 (the firewall crate's 1000-mapping scale runs)
#   BIN_DIR=target/<host triple>/release (what `make build` writes; else target/release)
#   OUT=docs/benchmarks (set OUT elsewhere for a short trial run, so that the committed
#   results are not overwritten)
#   PLOT_ONLY=1: only redraw latency.png from an existing summary.csv
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${BIN_DIR:-}" ]; then
    BIN_DIR="$REPO/target/$({ rustc -vV 2>/dev/null || true; } | sed -n 's/^host: //p')/release"
    [ -x "$BIN_DIR/bridge" ] || BIN_DIR="$REPO/target/release"
fi
OUT="${OUT:-$REPO/docs/benchmarks}"
LEVELS="${LEVELS:-0,100,500,1000}"
SAMPLES="${SAMPLES:-20}"
STARTUP_RUNS="${STARTUP_RUNS:-500}"
SCENARIOS="${SCENARIOS:-startup,bridge,portmap}"
OURS_IPTABLES="${OURS_IPTABLES:-0}"
OURS_UDP="${OURS_UDP:-1}"
IPAM_BENCH="${IPAM_BENCH:-1}"
IPAM_LEVELS="${IPAM_LEVELS:-}"
IPAM_SAMPLES="${IPAM_SAMPLES:-100}"
IPAM_BUDGET="${IPAM_BUDGET:-15}"
DNS_BENCH="${DNS_BENCH:-1}"
SCALE="${SCALE:-1}"
if [ -z "${REFERENCE:-}" ]; then
    REFERENCE=/usr/lib/cni
    [ -x "$REPO/.cache/reference-plugins/bridge" ] && REFERENCE="$REPO/.cache/reference-plugins"
fi
NETAVARK="${NETAVARK:-$REPO/.cache/netavark/bin/netavark}"

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
[ -d "$REFERENCE" ] || die "reference plugins not found in $REFERENCE (run scripts/install-deps.sh)"
for b in none bridge portmap host-local static macvlan host; do
    [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b missing: run 'make build' first"
done

T0=$(date +%s)
TAG="cb$$"
WORK="$(mktemp -d "/tmp/cni-bench-$TAG.XXXXXX")"
CHILD=""

cleanup() {
    local rc=$?
    set +e
    if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        case "$ns" in "$TAG"-*) ip netns del "$ns" 2>/dev/null ;; esac
    done
    rm -rf "$WORK" "/run/$TAG"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Lanes that did not run, with the reason: the "Left out" section of results.md.
LEFT_OUT="$WORK/left-out.md"
: >"$LEFT_OUT"
left_out() { # lane reason
    printf -- '- %s: %s\n' "$1" "$2" >>"$LEFT_OUT"
    printf 'bench.sh: left out: %s: %s\n' "$1" "$2" >&2
}

# Runs a command in the background and waits for it, so the traps can stop it by PID.
run_child() {
    "$@" &
    CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

# --- Debian packages this script and the benches it runs use ----------------------------
# Usually there already (scripts/install-deps.sh, `make bench` runs it first) except the
# bench-only ones: gnuplot (the plot), perf (start-up cost), file (static or dynamic),
# hyperfine (cni-bench's cross-check), dnsperf + dig + dnsmasq + aardvark-dns (bench/dns.sh),
# protoc (building netavark). What cannot be installed leaves its lane out, with the reason.
BENCH_PACKAGES=(iproute2 nftables iptables gnuplot-nox linux-perf hyperfine file dnsperf dnsutils
                dnsmasq-base aardvark-dns protobuf-compiler)
APT_WHO=bench.sh APT_LOG="$WORK/apt.log"
# shellcheck source=scripts/apt.sh
. "$REPO/scripts/apt.sh"
if ! apt_install_missing "${BENCH_PACKAGES[@]}" >&2; then
    # One at a time, so that one package the mirror lacks does not keep the others out.
    for p in "${APT_MISSING[@]}"; do
        apt_install_missing "$p" >/dev/null 2>&1 || echo "bench.sh: could not install $p (see above)" >&2
    done
fi
command -v ip >/dev/null || die "ip (iproute2) not found"

# --- the plot: drawn from summary.csv, so it can be redrawn alone (PLOT_ONLY=1) ----------
# One data file per panel: N, then median and p90 for ours, ours (iptables), reference,
# reference (nftables), netavark, ours (UDP port); NaN where a lane has no data.
panel_data() { # summary.csv scenario op
    awk -F, -v sc="$2" -v op="$3" '
        NR > 1 && $1 == sc && $5 == op { med[$2 "|" $4] = $7; p90[$2 "|" $4] = $8; seen[$4] = 1 }
        END {
            split("ours ours-iptables reference reference-nft netavark ours-udp", impl, " ")
            for (n in seen) {
                line = n
                for (i = 1; i <= 6; i++) {
                    k = impl[i] "|" n
                    line = line " " ((k in med) ? med[k] : "NaN") " " ((k in p90) ? p90[k] : "NaN")
                }
                print line
            }
        }' "$1" | sort -n
}

plot_latency() { # summary.csv output.png
    local summary="$1" png="$2" dir="$WORK/plot" term xtics xmax f
    command -v gnuplot >/dev/null || return 1
    [ -s "$summary" ] || return 1
    mkdir -p "$dir"
    for f in bridge:ADD bridge:DEL portmap:ADD portmap:DEL bridge:ADD+DEL portmap:ADD+DEL; do
        panel_data "$summary" "${f%%:*}" "${f##*:}" >"$dir/${f%%:*}_${f##*:}.dat"
    done
    xtics=$(cat "$dir"/*.dat | cut -d' ' -f1 | sort -nu | paste -sd, -)
    [ -n "$xtics" ] || return 1
    xmax=$(cat "$dir"/*.dat | cut -d' ' -f1 | sort -n | tail -1)
    [ "$xmax" -gt 0 ] || xmax=1
    say "plotting $png"
    term="pngcairo size 1400,1400 font 'DejaVu Sans,11'"
    gnuplot -e "set terminal pngcairo" >/dev/null 2>&1 || term="png size 1400,1400"
    # The series are shifted apart by 1.2% of the x range so their p90 bars do not overlap.
    panel() { # file title
        if [ -s "$dir/$1" ]; then
            cat <<EOF
set title "$2"
plot "$dir/$1" using (\$1-3*d):2:2:3 with yerrorlines lw 2 pt 7 lc rgb "#1b7837" title "ours (nftables)", \\
     "$dir/$1" using (\$1-2*d):12:12:13 with yerrorlines lw 2 pt 6 dt 2 lc rgb "#5aae61" title "ours (UDP port)", \\
     "$dir/$1" using (\$1-d):4:4:5 with yerrorlines lw 2 pt 5 lc rgb "#2166ac" title "ours (iptables backend)", \\
     "$dir/$1" using 1:6:6:7 with yerrorlines lw 2 pt 9 lc rgb "#b2182b" title "reference (iptables)", \\
     "$dir/$1" using (\$1+d):8:8:9 with yerrorlines lw 2 pt 11 lc rgb "#f4a582" title "reference (nftables)", \\
     "$dir/$1" using (\$1+2*d):10:10:11 with yerrorlines lw 2 pt 13 lc rgb "#762a83" title "netavark"
EOF
        else
            cat <<EOF
set title "$2 (not run)"
unset key
set yrange [1:10]
set label 99 "not run" at graph 0.5, graph 0.5 center
plot 5 with lines lc rgb "white" notitle
unset label 99
set yrange [*:*]
set key below horizontal maxcols 6 samplen 2 width -2
EOF
        fi
    }
    {
        cat <<EOF
set terminal $term
set output "$png"
set multiplot layout 3,2 title "CNI ADD/DEL latency vs containers already on the bridge (point = median, bar up to p90; log y)"
set logscale y
set format y "%g"
set ylabel "ms per call"
set xlabel "N existing containers" offset 0,0.3
set xtics ($xtics)
d = $xmax * 0.012
set xrange [-$xmax * 0.05 : $xmax * 1.05]
set grid ytics mytics xtics
set key below horizontal maxcols 6 samplen 2 width -2
EOF
        panel bridge_ADD.dat "bridge + host-local: ADD"
        panel bridge_DEL.dat "bridge + host-local: DEL"
        panel portmap_ADD.dat "bridge + portmap: ADD (bridge + portmap processes)"
        panel portmap_DEL.dat "bridge + portmap: DEL (portmap + bridge processes)"
        panel bridge_ADD+DEL.dat "bridge + host-local: ADD+DEL per container"
        panel portmap_ADD+DEL.dat "bridge + portmap: ADD+DEL per container"
        echo "unset multiplot"
    } >"$WORK/latency.gp"
    if ! gnuplot "$WORK/latency.gp" 2>"$WORK/gnuplot.err"; then
        cat "$WORK/gnuplot.err" >&2
        return 1
    fi
}

if [ "${PLOT_ONLY:-0}" = 1 ]; then
    plot_latency "$OUT/summary.csv" "$OUT/latency.png" || die "no plot (gnuplot missing or no data in $OUT/summary.csv)"
    exit 0
fi

# --- netavark 2.x (built from crates.io into .cache, not committed) -------------------------
# `cargo install netavark@2` is refused (a bare `2` is no version); `--version ^2` is the
# newest 2.x. netavark's build script compiles protobuf files: it needs protoc. The lane's
# network has dns_enabled false, so aardvark-dns is not needed beside it.
NETAVARK_WHY=""
if [ "$NETAVARK" = none ]; then
    NETAVARK_WHY="not asked for (NETAVARK=none)"
elif [ ! -x "$NETAVARK" ]; then
    if ! command -v cargo >/dev/null; then
        NETAVARK_WHY="$NETAVARK missing and no cargo to build it"
    elif ! command -v protoc >/dev/null; then
        NETAVARK_WHY="$NETAVARK missing and protoc (protobuf-compiler) not installed to build it"
    else
        say "building netavark 2.x into .cache/netavark (cargo install, once; ~15-20 min on 2 cores)"
        if ! cargo install -q --locked netavark --version '^2' --root "$REPO/.cache/netavark" \
                >"$WORK/netavark-build.log" 2>&1; then
            tail -5 "$WORK/netavark-build.log" >&2
            NETAVARK_WHY="did not build: $(grep -m1 '^error' "$WORK/netavark-build.log" || tail -1 "$WORK/netavark-build.log")"
        fi
    fi
    [ -x "$NETAVARK" ] || NETAVARK_WHY="${NETAVARK_WHY:-$NETAVARK not found after the build}"
fi
if [ -n "$NETAVARK_WHY" ]; then
    left_out "netavark (bridge and portmap)" "$NETAVARK_WHY"
    NETAVARK=none
fi

# --- cni-bench ----------------------------------------------------------------------------
CNI_BENCH="$BIN_DIR/cni-bench"
if [ ! -x "$CNI_BENCH" ]; then
    say "building cni-bench"
    (cd "$REPO" && cargo build --release -q -p integration --bin cni-bench) || die "cargo build failed"
    CNI_BENCH="${CARGO_TARGET_DIR:-$REPO/target}/release/cni-bench"
fi
mkdir -p "$OUT"
say "cni-bench: scenarios $SCENARIOS, N = $LEVELS, samples $SAMPLES (progress below)"
args=(--ours "$BIN_DIR" --reference "$REFERENCE" --out "$OUT" --work "$WORK/cni-bench" --tag "$TAG"
      --levels "$LEVELS" --samples "$SAMPLES" --startup-runs "$STARTUP_RUNS" --scenarios "$SCENARIOS")
[ "$OURS_IPTABLES" = 1 ] || args+=(--no-ours-iptables)
[ "$OURS_UDP" = 1 ] || args+=(--no-ours-udp)
args+=(--netavark "$NETAVARK")
bench_rc=0
run_child "$CNI_BENCH" "${args[@]}" || bench_rc=$?
[ -f "$WORK/cni-bench/tables.md" ] || die "cni-bench failed (exit $bench_rc) before writing any table"
T_BENCH=$(( $(date +%s) - T0 ))

# --- where start-up time goes: perf stat, in a private namespace -------------------------
PERF_MD="$WORK/perf.md"
: >"$PERF_MD"
if ! command -v perf >/dev/null; then
    left_out "perf stat (where start-up time goes)" "perf not found (linux-perf did not install)"
else
    say "perf stat: start-up cost of ours vs reference vs the machine's floor"
    ip netns add "$TAG-perf"
    echo '{"cniVersion":"1.0.0"}' >"$WORK/version.json"
    {
        echo "### Where start-up time goes"
        echo
        echo "\`perf stat -r 300\` of a VERSION call (task-clock = CPU time of the process, page faults ="
        echo "minor faults while mapping and running it; on this VM each fault is expensive). Static vs"
        echo "dynamic linking from \`file\`."
        echo
        echo "| binary | linking | size (KiB) | task-clock (ms) | page faults |"
        echo "|---|---|---:|---:|---:|"
    } >>"$PERF_MD"
    for b in /bin/busybox /bin/true "$BIN_DIR/none" "$BIN_DIR/bridge" "$REFERENCE/loopback" "$REFERENCE/bridge"; do
        [ -x "$b" ] || continue
        argv=("$b"); [ "$b" = /bin/busybox ] && argv=("$b" true)
        stats=""
        for _ in 1 2; do
            if stats=$(CNI_COMMAND=VERSION ip netns exec "$TAG-perf" perf stat -x, -r 300 -e task-clock,page-faults \
                           "${argv[@]}" <"$WORK/version.json" 2>&1 >/dev/null); then
                break
            fi
            echo "perf stat failed for $b: $(tail -n 3 <<<"$stats")" >&2
            stats=""
        done
        if [ -z "$stats" ]; then
            left_out "perf stat of $b" "perf stat failed twice (see the run's output)"
            continue
        fi
        tc=$(awk -F, '$3 ~ /^task-clock/ {printf "%.3f", $1}' <<<"$stats")
        pf=$(awk -F, '$3 ~ /^page-faults/ {printf "%.0f", $1}' <<<"$stats")
        link="?"
        if command -v file >/dev/null; then
            link=$(file -L "$b" | grep -q 'statically linked\|static-pie' && echo static || echo dynamic)
        fi
        size=$(( $(stat -L -c %s "$b") / 1024 ))
        label="$b"
        case "$b" in "$BIN_DIR"/*) label="ours ${b##*/}" ;; "$REFERENCE"/*) label="reference ${b##*/}" ;;
                     /bin/busybox) label="/bin/busybox true (floor, static)" ;; /bin/true) label="/bin/true (floor, dynamic)" ;; esac
        echo "| $label | $link | $size | $tc | $pf |" >>"$PERF_MD"
    done
    echo >>"$PERF_MD"
    ip netns del "$TAG-perf"
fi

# --- IPAM lease-store bench (another engineer's), if present ------------------------------
# fill_bench runs inside $TAG-ipam and gives the plugins CNI_NETNS=$TAG-ipamc: the reference
# v1.10 refuses a CNI_NETNS that is its own namespace ("plugin's netns and netns from
# CNI_NETNS should not be the same"), which left its lane, and so the whole table, out.
IPAM_MD="$WORK/ipam.md"
: >"$IPAM_MD"
if [ "$IPAM_BENCH" != 1 ]; then
    left_out "IPAM (ours and reference host-local)" "not asked for (IPAM_BENCH=$IPAM_BENCH)"
elif [ -x "$REPO/bench/ipam.sh" ]; then
    say "IPAM bench: bench/ipam.sh"
    ipam_rc=0
    run_child "$REPO/bench/ipam.sh" >"$WORK/ipam.out" || ipam_rc=$?
    { echo "## IPAM: host-local ADD/DEL vs leases in the store (bench/ipam.sh)"; echo; cat "$WORK/ipam.out"; echo; } >>"$IPAM_MD"
    [ "$ipam_rc" -eq 0 ] || left_out "IPAM (bench/ipam.sh)" "exit status $ipam_rc (see the run's output)"
elif [ -f "$REPO/ipam/examples/fill_bench.rs" ]; then
    say "IPAM bench: ipam/examples/fill_bench.rs (reference capped at $IPAM_BUDGET s per level and op)"
    if (cd "$REPO" && cargo build --release -q -p ipam --example fill_bench); then
        # host-local only touches files, but it still runs in a private namespace.
        ip netns add "$TAG-ipam"
        ip netns add "$TAG-ipamc"
        ipam_args=(--ours "$BIN_DIR/host-local" --reference "$REFERENCE/host-local"
                   --samples "$IPAM_SAMPLES" --budget "$IPAM_BUDGET" --dir "$WORK/ipam"
                   --netns "/run/netns/$TAG-ipamc")
        [ -z "$IPAM_LEVELS" ] || ipam_args+=(--levels "$IPAM_LEVELS")
        ipam_rc=0
        run_child ip netns exec "$TAG-ipam" "${CARGO_TARGET_DIR:-$REPO/target}/release/examples/fill_bench" \
            "${ipam_args[@]}" >"$WORK/ipam.out" || ipam_rc=$?
        if [ -s "$WORK/ipam.out" ]; then
            # Also after a failure: the plugin that failed is named in a "- left out:" line.
            { echo "## IPAM: host-local ADD/DEL vs leases in the store (ipam/examples/fill_bench.rs)"; echo
              cat "$WORK/ipam.out"; echo; } >>"$IPAM_MD"
        else
            left_out "IPAM (ours and reference host-local)" "fill_bench failed (exit $ipam_rc) before printing a table"
        fi
        ip netns del "$TAG-ipam"
        ip netns del "$TAG-ipamc"
        rm -rf "$WORK/ipam"
    else
        left_out "IPAM (ours and reference host-local)" "fill_bench did not build"
    fi
else
    left_out "IPAM (ours and reference host-local)" "no bench/ipam.sh nor ipam/examples/fill_bench.rs"
fi

# --- DNS bench (another engineer's), if present --------------------------------------------
DNS_MD="$WORK/dns.md"
: >"$DNS_MD"
if [ "$DNS_BENCH" != 1 ]; then
    left_out "DNS (dns-alias, dnsmasq, aardvark-dns)" "not asked for (DNS_BENCH=$DNS_BENCH)"
elif [ ! -x "$REPO/bench/dns.sh" ]; then
    left_out "DNS (dns-alias, dnsmasq, aardvark-dns)" "no bench/dns.sh"
elif [ ! -x "$BIN_DIR/dns-alias" ]; then
    left_out "DNS (dns-alias, dnsmasq, aardvark-dns)" "$BIN_DIR/dns-alias missing"
else
    say "DNS bench: bench/dns.sh"
    dns_rc=0
    run_child env DNS_ALIAS="$BIN_DIR/dns-alias" "$REPO/bench/dns.sh" >"$WORK/dns.out" 2>"$WORK/dns.err" || dns_rc=$?
    cat "$WORK/dns.err" >&2
    if [ "$dns_rc" -eq 0 ]; then
        { echo "## DNS: container name resolution (bench/dns.sh)"; echo; cat "$WORK/dns.out"; echo; } >>"$DNS_MD"
    else
        left_out "DNS (dns-alias, dnsmasq, aardvark-dns)" "bench/dns.sh failed (exit $dns_rc): $(grep -m1 '^bench/dns.sh:' "$WORK/dns.err" || tail -1 "$WORK/dns.err")"
    fi
fi

# --- scale: the firewall crate's 1000-mapping runs (moved out of make test) ---------------
SCALE_MD="$WORK/scale.md"
: >"$SCALE_MD"
if [ "$SCALE" != 1 ]; then
    left_out "firewall scale runs (1000 mappings)" "not asked for (SCALE=$SCALE)"
else
    say "firewall scale runs (1000 mappings, each backend, in private namespaces)"
    if (cd "$REPO" && cargo test -q --release -p firewall --test kernel -- --ignored --nocapture scale) >"$WORK/scale.out" 2>&1; then
        { echo "## Firewall backends at scale: 1000 containers' mappings, one call at a time"; echo
          echo '```'; grep -E '^(nftables|iptables):' "$WORK/scale.out"; echo '```'; echo; } >>"$SCALE_MD"
    else
        { echo "## Firewall scale runs"; echo; echo "Not completed:"; echo '```'; tail -20 "$WORK/scale.out"; echo '```'; echo; } >>"$SCALE_MD"
        left_out "firewall scale runs (1000 mappings)" "cargo test failed (its last lines are in that section)"
    fi
fi

# --- plot -------------------------------------------------------------------------------
PLOT_NOTE="(no plot: gnuplot missing or no latency data)"
if plot_latency "$OUT/summary.csv" "$OUT/latency.png"; then
    PLOT_NOTE="![ADD and DEL latency vs N](latency.png)"
elif ! command -v gnuplot >/dev/null; then
    left_out "plot (latency.png)" "gnuplot not found (gnuplot-nox did not install)"
else
    left_out "plot (latency.png)" "gnuplot failed or no latency data (see the run's output)"
fi

# --- left out: this script's own list, then every "- left out:" line the benches wrote ------
LEFT_MD="$WORK/left-out-section.md"
{
    echo "## Left out"
    echo
    echo "Lanes that did not run in this run, and why. cni-bench's flags map to this script's"
    echo "knobs: \`--no-ours-iptables\` is OURS_IPTABLES=0 (the default), \`--no-ours-udp\` is"
    echo "OURS_UDP=0, \`--netavark none\` is NETAVARK=none or a netavark that could not be built,"
    echo "\`--scenarios\` is SCENARIOS."
    echo
    cat "$LEFT_OUT"
    for f in "$WORK/cni-bench/tables.md" "$WORK/ipam.out" "$WORK/dns.out"; do
        [ ! -f "$f" ] || sed -n 's/^- left out: /- /p' "$f"
    done
} >"$LEFT_MD"
if [ "$(grep -c '^- ' "$LEFT_MD")" -eq 0 ]; then
    echo "Every lane ran." >>"$LEFT_MD"
fi
echo >>"$LEFT_MD"

# --- results.md ---------------------------------------------------------------------------
T_ALL=$(( $(date +%s) - T0 ))
rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=""
[ -n "$(git -C "$REPO" status --porcelain 2>/dev/null | head -1)" ] && dirty=" (with uncommitted changes)"
refver=$({ "$REFERENCE/bridge" </dev/null 2>&1 || true; } | head -1)
navver="not run"
[ "$NETAVARK" = none ] || navver=$("$NETAVARK" --version 2>/dev/null || echo "netavark (version unknown)")
{
    echo "# Benchmarks: our plugins vs the reference plugins and netavark"
    echo
    echo "Generated by \`make bench\` (scripts/bench.sh driving integration/src/bin/cni-bench.rs). Ours and"
    echo "the reference run in the same run, interleaved sample by sample; every plugin process runs in a"
    echo "private network namespace, never in the machine's own. Medians and p90 (nearest rank) in ms;"
    echo "ratios are reference median / ours median, so above 1× means ours is faster. Every sample is in"
    echo "[raw.csv](raw.csv); [summary.csv](summary.csv) has count, median, p90, min and max per cell."
    echo
    echo "## Machine"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| nproc | $(nproc) |"
    echo "| CPU | $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo) |"
    echo "| memory | $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) |"
    echo "| kernel | $(uname -r) |"
    echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
    echo "| ours | git $rev$dirty, release build ($BIN_DIR) |"
    echo "| reference | $refver ($REFERENCE) |"
    echo "| netavark | $navver |"
    echo "| iptables | $(iptables --version 2>/dev/null || echo none) |"
    echo "| nft | $(nft --version 2>/dev/null || echo none) |"
    echo "| run time | cni-bench ${T_BENCH} s; whole script ${T_ALL} s |"
    echo
    echo "$PLOT_NOTE"
    echo
    cat "$WORK/cni-bench/tables.md"
    cat "$SCALE_MD"
    cat "$PERF_MD"
    cat "$IPAM_MD"
    cat "$DNS_MD"
    cat "$LEFT_MD"
} >"$OUT/results.md"

say "done in ${T_ALL} s: $OUT/results.md, $OUT/latency.png, $OUT/raw.csv, $OUT/summary.csv"
[ "$bench_rc" -eq 0 ] || die "cni-bench reported failures (exit $bench_rc); see results.md"
