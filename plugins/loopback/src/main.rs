//! `loopback`: the plugin containerd's CRI runs for every pod (cniVersion 0.3.1, CNI_IFNAME
//! `lo`), in parallel with the pod network. The same code serves `none`.

fn main() {
    cni::run(&cni_loopback::Loopback)
}
