//! The `bridge` binary: see the library (`src/lib.rs`) for what it does.

fn main() {
    cni::run(&cni_bridge::BridgePlugin)
}
