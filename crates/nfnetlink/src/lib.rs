//! In-process netfilter programming for the CNI plugin suite, without `nft` or `conntrack`
//! child processes:
//! - [`tables`]: nf_tables objects and transactions (one nfnetlink batch each), rendered as
//!   `nft` commands too, so a transaction can be read and golden-tested as text; and the
//!   lookups that read state back (a table, a chain, the rules of one chain);
//! - [`expr`]: the expressions rules are made of, built statement by statement the way
//!   `nft` builds them, so `nft list ruleset` prints our rules as if nft had added them,
//!   and decoded from the kernel's dumps into the same values;
//! - [`ctnetlink`]: deleting conntrack entries.
//!
//! Everything talks to the network namespace the socket was opened in (the calling
//! thread's at [`Socket::open`]).

pub mod attr;
pub mod ctnetlink;
pub mod expr;
pub mod socket;
pub mod tables;

pub use expr::{Expr, Rule, Verdict};
pub use socket::{Error, Socket};
pub use tables::{
    commit, render, ChainInfo, Elem, ElemData, Family, Hook, Op, RuleInfo, SetDef, TableInfo,
};
