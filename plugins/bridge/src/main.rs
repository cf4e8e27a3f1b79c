//! The `bridge` binary: see the library (`src/lib.rs`) for what it does.

fn main() {
    // The detached link-delete helper (netlink::detach) is this binary with a hidden argument.
    netlink::run_helper_if_asked();
    cni::run(&cni_bridge::BridgePlugin)
}
