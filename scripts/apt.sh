# Shared apt helpers, sourced (not run) by scripts/install-deps.sh and scripts/bench.sh.
#
#   apt_missing PKG...            sets APT_MISSING to those of PKG not installed
#   apt_install_missing PKG...    installs those of PKG not installed; 0 when all are
#
# apt_install_missing waits for the dpkg lock (another apt run on the machine) instead of
# failing, tries the install on the package lists as they are, and when that fails (a
# fresh machine's lists are empty, an old list names a version the mirror dropped) runs
# `apt-get update` once and tries again. It runs `apt-get update` first when there are no
# lists at all. apt's output goes to $APT_LOG (the caller sets it and removes it); on
# failure its last lines are printed on stderr. Progress lines go to stdout as
# "$APT_WHO: ...". Needs root only when something is missing.

APT_OPTS=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 -q)
APT_WHO="${APT_WHO:-apt}"
APT_LOG="${APT_LOG:-/dev/null}"
APT_UPDATED=0
APT_MISSING=()

# (No `cmd | grep -q` here: with pipefail, grep exiting early makes the writer die of
# SIGPIPE and the whole test look false.)
apt_is_installed() { # PKG
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == *"install ok installed"* ]]
}

apt_missing() { # PKG...
    APT_MISSING=()
    local p
    for p in "$@"; do
        apt_is_installed "$p" || APT_MISSING+=("$p")
    done
}

apt_log() { printf '%s: %s\n' "$APT_WHO" "$*"; }

# Runs apt-get quietly into $APT_LOG.
apt_run() {
    DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" "$@" >>"$APT_LOG" 2>&1
}

# At most once per run of the sourcing script.
apt_update() {
    [ "$APT_UPDATED" = 0 ] || return 0
    APT_UPDATED=1
    apt_log "apt-get update"
    apt_run update
}

apt_install_missing() { # PKG...
    apt_missing "$@"
    [ "${#APT_MISSING[@]}" -gt 0 ] || return 0
    command -v apt-get >/dev/null || { apt_log "apt-get not found: cannot install ${APT_MISSING[*]}" >&2; return 1; }
    if [ "$(id -u)" -ne 0 ]; then
        apt_log "installing ${APT_MISSING[*]} needs root" >&2
        return 1
    fi
    local lists=(/var/lib/apt/lists/*_Packages*)
    [ -e "${lists[0]}" ] || apt_update || true
    apt_log "installing: ${APT_MISSING[*]}"
    if apt_run install -y --no-install-recommends "${APT_MISSING[@]}"; then
        return 0
    fi
    if [ "$APT_UPDATED" = 0 ] && apt_update \
        && apt_run install -y --no-install-recommends "${APT_MISSING[@]}"; then
        return 0
    fi
    tail -n 40 "$APT_LOG" >&2
    return 1
}
