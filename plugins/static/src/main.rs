fn main() {
    cni::run(&ipam::Static)
}
