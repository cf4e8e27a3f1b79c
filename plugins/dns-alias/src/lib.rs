//! dns-alias as a library: the plugin binary (`src/main.rs`) and the fuzz targets
//! (`fuzz/`) share it. Docker's embedded DNS for CNI networks: a chained plugin records
//! each container's names, aliases and addresses per network; a per-host daemon (the same
//! binary, `dns-alias daemon`) answers them at 127.0.0.11 inside each container, scoped to
//! the networks that container shares, and forwards other names.

pub mod client;
pub mod config;
pub mod daemon;
pub mod netns;
pub mod store;
pub mod wire;
pub mod zone;
