//! What tuning remembers per attachment, in the kit's typed store: the original values ADD
//! replaced, so DEL can put them back. Layout: `<dataDir or $CNI_SUITE_STATE_DIR/tuning>/
//! <network>/<containerID>_<ifname>.json`, written before anything changes.

use crate::plan::Originals;
use cni::store::Store;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The state record of one attachment: what DEL restores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub network: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub originals: Originals,
}

pub fn store(data_dir: Option<&Path>) -> Store {
    match data_dir {
        Some(d) => Store::new(d.to_path_buf()),
        None => Store::for_plugin("tuning"),
    }
}
