fn main() {
    cni::run(&ipam::HostLocal)
}
