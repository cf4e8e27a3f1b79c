//! What the plugin records per container interface, in the kit's typed store, before the
//! kernel is touched: `$CNI_SUITE_STATE_DIR/firewall/attachments/<key>.json`, the key
//! `<containerID>/<ifname>` through `cni::names::file_key`.

use crate::config::Policy;
use cni::store::Store;
use firewall::ingress::Attachment as Ingress;
use serde::{Deserialize, Serialize};

/// What we record per container interface, before touching the kernel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub network: String,
    pub policy: Policy,
    pub backend: String,
    pub admin_chain: String,
    pub attachment: Ingress,
}

/// `$CNI_SUITE_STATE_DIR/firewall` (or /run/cni-suite/firewall).
pub fn store() -> Store {
    Store::for_plugin("firewall")
}

/// The record key of one attachment (under `attachments`).
pub fn key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// Every readable record.
pub fn records() -> Vec<Record> {
    store().list_lenient(&["attachments"]).into_iter().filter_map(|(_, r)| r.ok()).collect()
}
