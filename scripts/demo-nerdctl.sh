#!/usr/bin/env bash
# `make demo RUNTIME=nerdctl`: the Docker networking story told with nerdctl's
# docker-compatible commands on containerd 2.x (the pinned builds in .cache/runtime/bin),
# with only this suite's plugins in the CNI path. Everything runs in a network namespace
# and a private mount namespace this script creates; the machine's own network, /run,
# /etc/cni and /opt/cni are never touched.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$REPO/.cache/runtime/bin"
for b in containerd containerd-shim-runc-v2 ctr nerdctl; do
    [ -x "$BIN/$b" ] || { echo "$BIN/$b missing: run scripts/install-deps.sh containerd nerdctl" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "make demo needs root (namespaces)" >&2; exit 1; }
BUSYBOX="$(command -v busybox || true)"
[ -n "$BUSYBOX" ] || { echo "busybox missing: run scripts/install-deps.sh" >&2; exit 1; }

TMP="$(mktemp -d /tmp/cni-demo-nerdctl.XXXXXX)"
ID="dn$$"
HOST="${ID}-host"
HOLDER=""
CONTAINERD=""
CGROUP="cni-suite-demo-$$"

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
# Everything nerdctl/containerd do happens in the holder's network and mount namespaces.
HOST_ENV=(env -i PATH="$BIN:/usr/sbin:/usr/bin:/sbin:/bin" CNI_SUITE_STATE_DIR="$TMP/state"
    NERDCTL_TOML="$TMP/nerdctl.toml" HOME="$TMP")
in_host() { nsenter -t "$HOLDER" -m -n -- "${HOST_ENV[@]}" "$@"; }
nerdctl() { in_host nerdctl "$@"; }
# Shows a command and what it printed; a failure is part of the story, not the end of it.
show() { printf '   $ nerdctl %s\n' "$*"; { nerdctl "$@" 2>&1 || true; } | sed 's/^/     /'; }

cleanup() {
    set +e
    if [ -n "$HOLDER" ] && [ -n "$CONTAINERD" ]; then
        ids=$(nerdctl ps -aq 2>/dev/null)
        [ -z "$ids" ] || nerdctl rm -f $ids >/dev/null 2>&1
        nerdctl network rm mynet othernet >/dev/null 2>&1
    fi
    [ -z "$CONTAINERD" ] || { kill "$CONTAINERD"; wait "$CONTAINERD" 2>/dev/null; }
    [ -z "$HOLDER" ] || { kill "$HOLDER"; wait "$HOLDER" 2>/dev/null; }
    for d in /sys/fs/cgroup/*/"$CGROUP"; do [ -d "$d" ] && rmdir "$d"/* "$d" 2>/dev/null; done
    ip netns del "$HOST" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bold "Installing the plugins into a temp dir (as into /opt/cni/bin)"
make -s -C "$REPO" install PREFIX="$TMP/bin" >/dev/null
say "$(ls "$TMP/bin" | tr '\n' ' ')"

# --- a private "host": network namespace + mount namespace (fresh /run, /sys) ---------
ip netns add "$HOST"
ip -n "$HOST" link set lo up
ip -n "$HOST" link add uplink type veth peer name uplink-peer
ip -n "$HOST" addr add 192.0.2.1/24 dev uplink
ip -n "$HOST" link set uplink up
mkdir -p "$TMP/state" "$TMP/libcni" "$TMP/containerd" "$TMP/nerdctl-data" "$TMP/net.d" "$TMP/work"
unshare -m --propagation private nsenter --net="/var/run/netns/$HOST" sh -c '
    set -e
    mkdir -p "$1/cg"; mount --rbind /sys/fs/cgroup "$1/cg"
    mount -t sysfs sysfs /sys; mount --rbind "$1/cg" /sys/fs/cgroup; umount -l "$1/cg"
    mount -t tmpfs -o mode=755 tmpfs /run; mkdir -p /run/netns
    mkdir -p /var/lib/cni; mount --bind "$2" /var/lib/cni
    touch "$1/ready"; exec sleep 2147483647' holder "$TMP/work" "$TMP/libcni" &
HOLDER=$!
for _ in $(seq 100); do [ -e "$TMP/work/ready" ] && break; sleep 0.05; done
[ -e "$TMP/work/ready" ] || { echo "private namespaces did not come up" >&2; exit 1; }

bold "containerd $("$BIN/containerd" --version | awk '{print $3}') and nerdctl $("$BIN/nerdctl" --version | awk '{print $3}'), state in $TMP"
cat > "$TMP/containerd/config.toml" <<EOF
version = 3
root = "$TMP/containerd/root"
state = "$TMP/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.snapshotter.v1.erofs", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
  "io.containerd.podsandbox.controller.v1.podsandbox"]
[grpc]
  address = "$TMP/containerd/containerd.sock"
[ttrpc]
  address = "$TMP/containerd/containerd.sock.ttrpc"
[plugins.'io.containerd.transfer.v1.local']
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = "linux/$(dpkg --print-architecture)"
    snapshotter = "native"
EOF
cat > "$TMP/nerdctl.toml" <<EOF
address = "$TMP/containerd/containerd.sock"
namespace = "default"
snapshotter = "native"
cgroup_manager = "cgroupfs"
data_root = "$TMP/nerdctl-data"
cni_path = "$TMP/bin"
cni_netconfpath = "$TMP/net.d"
EOF
# Not through in_host: a backgrounded function would be a subshell, and $! its PID. nsenter
# and env exec in place, so $! is containerd itself.
nsenter -t "$HOLDER" -m -n -- "${HOST_ENV[@]}" containerd --config "$TMP/containerd/config.toml" \
    >"$TMP/containerd/log" 2>&1 &
CONTAINERD=$!
for _ in $(seq 100); do in_host ctr --address "$TMP/containerd/containerd.sock" version >/dev/null 2>&1 && break; sleep 0.1; done

# --- an image, made offline: busybox-static, httpd serving a page ---------------------
oci_image() {  # oci_image NAME OUT.tar CMD-JSON
    local name=$1 out=$2 cmd=$3 root="$TMP/rootfs" lay="$TMP/layout"
    rm -rf "$lay"; mkdir -p "$root"/{bin,www,etc,tmp} "$lay/blobs/sha256"
    if [ ! -e "$root/bin/busybox" ]; then
        cp "$BUSYBOX" "$root/bin/busybox"
        for a in sh httpd wget nslookup sleep cat timeout; do ln -s busybox "$root/bin/$a"; done
        echo "hello from web" > "$root/www/index.html"
    fi
    blob() { local h; h=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$lay/blobs/sha256/$h"; echo "$h $(stat -c %s "$lay/blobs/sha256/$h")"; }
    tar --numeric-owner -cf "$TMP/layer.tar" -C "$root" .
    read -r lh ls < <(blob "$TMP/layer.tar")
    printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$(dpkg --print-architecture)" "$cmd" "$lh" > "$TMP/c.json"
    read -r ch cs < <(blob "$TMP/c.json")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$ch" "$cs" "$lh" "$ls" > "$TMP/m.json"
    read -r mh ms < <(blob "$TMP/m.json")
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s"}}]}' \
        "$mh" "$ms" "$name" > "$lay/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' > "$lay/oci-layout"
    tar -cf "$out" -C "$lay" .
}
oci_image localhost/web:latest "$TMP/web.tar" '["httpd","-f","-p","80","-h","/www"]'
in_host ctr --address "$TMP/containerd/containerd.sock" -n default image import --snapshotter native --local "$TMP/web.tar" >/dev/null
say "image localhost/web:latest (busybox httpd) imported"

run() { show run --cgroup-parent "/$CGROUP" "$@"; }

bold "docker network create --subnet 10.0.0.0/24 --ip-range 10.0.0.128/25 --gateway 10.0.0.1 mynet"
show network create --subnet 10.0.0.0/24 --ip-range 10.0.0.128/25 --gateway 10.0.0.1 mynet
show network create --subnet 10.0.1.0/24 othernet
say "nerdctl wrote: $(ls "$TMP/net.d"/*/ "$TMP/net.d" 2>/dev/null | grep conflist | tr '\n' ' ')"

bold "docker run -d --name web --network mynet -p 8080:80 localhost/web"
run -d --name web --network mynet -p 8080:80 localhost/web:latest
say "web's address: $(nerdctl container inspect --format '{{.NetworkSettings.IPAddress}}' web 2>/dev/null)"
printf '   $ wget -qO- http://127.0.0.1:8080/   (from the host)\n'
in_host busybox wget -qO- http://127.0.0.1:8080/ 2>&1 | sed 's/^/     /'
printf '   $ wget -qO- http://192.0.2.1:8080/   (the host'"'"'s own address)\n'
in_host busybox wget -qO- http://192.0.2.1:8080/ 2>&1 | sed 's/^/     /'

bold "docker run --ip 10.0.0.150 --network mynet ..."
run -d --name fixed --network mynet --ip 10.0.0.150 localhost/web:latest
say "fixed's address: $(nerdctl container inspect --format '{{.NetworkSettings.IPAddress}}' fixed 2>/dev/null)"

bold "Name resolution: a dns-alias network dropped into nerdctl's config dir"
cat > "$TMP/net.d/dnsnet.conflist" <<'EOF'
{ "cniVersion": "1.0.0", "name": "dnsnet", "plugins": [
  { "type": "bridge", "bridge": "cni-dns", "isGateway": true, "ipMasq": true,
    "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.0.2.0/24" }]], "routes": [{ "dst": "0.0.0.0/0" }] } },
  { "type": "portmap", "capabilities": { "portMappings": true } },
  { "type": "dns-alias", "capabilities": { "aliases": true } } ] }
EOF
show network ls
run -d --name db --hostname db --network dnsnet localhost/web:latest
run --rm --network dnsnet localhost/web:latest nslookup db 127.0.0.11

bold "docker run --name web2 -p 8080:80 ...: the port is taken"
run -d --name web2 --network mynet -p 8080:80 localhost/web:latest

bold "docker run --network othernet ...: another network cannot reach web"
web_ip=$(nerdctl container inspect --format '{{.NetworkSettings.IPAddress}}' web 2>/dev/null)
if nerdctl run --rm --cgroup-parent "/$CGROUP" --network othernet localhost/web:latest \
        sh -c "timeout 3 wget -qO- http://$web_ip/; exit \$?" >/dev/null 2>&1; then
    say "UNEXPECTED: othernet reached web"
else
    say "wget http://$web_ip/ from othernet: no answer (networks are isolated)"
fi

bold "docker rm -f web fixed db; docker network rm mynet othernet: everything is removed"
show rm -f web fixed db
show network rm mynet othernet
say "links left in the host namespace: $(ip -n "$HOST" -o link show | awk -F': ' '{print $2}' | grep -v -e '^lo$' -e '^uplink' | tr '\n' ' ')"
say "our nftables tables left: $(ip netns exec "$HOST" nft list tables | grep -c cni_ || true)"
say "state files left: $(find "$TMP/state" -type f ! -name lock | wc -l)"
bold "Done."
