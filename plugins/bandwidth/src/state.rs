//! What bandwidth remembers per attachment, in the kit's typed store: what its ADD created,
//! so DEL and GC remove exactly that. Layout: `$CNI_SUITE_STATE_DIR/bandwidth/<network>/
//! <containerID>_<ifname>.json`, written before anything is created.

use cni::store::Store;
use serde::{Deserialize, Serialize};

/// What one attachment's ADD created: what DEL removes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub network: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    /// The host-side veth and its index (a veth re-created under the same name is not ours).
    pub host_veth: String,
    pub host_index: u32,
    /// A tbf was put at the root of the host-side veth.
    pub ingress: bool,
    /// The ifb made for egress shaping (plus the ingress qdisc on the host-side veth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifb: Option<String>,
}

pub fn store() -> Store {
    Store::for_plugin("bandwidth")
}
