//! `none`: Docker's `--network none`. The container gets loopback only: the very same plugin
//! as `loopback` (see `plugins/loopback`), under the name Docker users look for.

fn main() {
    cni::run(&cni_loopback::Loopback)
}
