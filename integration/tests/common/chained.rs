//! Helpers for the chained (meta) plugins' tests: the same chain runs with the plugin under
//! test taken from this workspace or from the reference plugins, everything else ours.
#![allow(dead_code)]

use std::path::PathBuf;

use integration::*;

/// Which build of the plugin under test a chain uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Ours,
    Reference,
}

impl Impl {
    pub fn label(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::Reference => "ref",
        }
    }
}

/// The plugins our chains use besides the plugin under test.
const OURS: &[&str] =
    &["bridge", "host-local", "static", "host", "portmap", "firewall", "tuning", "bandwidth"];

/// A plugin directory (`CNI_PATH`) with our binaries, except `plugin`, which comes from `which`.
pub fn plugins_with(env: &TestEnv, plugin: &str, which: Impl) -> Plugins {
    let dir = env.dir().join(format!("bin-{plugin}-{}", which.label()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in OURS.iter().filter(|n| **n != plugin) {
        let src = env.our_plugin_dir().join(name);
        if src.is_file() {
            link(&src, &dir.join(name));
        }
    }
    let src = match which {
        Impl::Ours => env.plugin_path(&Plugins::Ours, plugin),
        Impl::Reference => env.plugin_path(&Plugins::Reference, plugin),
    };
    link(&src, &dir.join(plugin));
    Plugins::Dirs(vec![dir])
}

/// The binary of `plugin` for `which` (for calls made without cnitool).
pub fn plugin_binary(env: &TestEnv, plugin: &str, which: Impl) -> PathBuf {
    match which {
        Impl::Ours => env.plugin_path(&Plugins::Ours, plugin),
        Impl::Reference => env.plugin_path(&Plugins::Reference, plugin),
    }
}

fn link(src: &std::path::Path, dst: &std::path::Path) {
    if !dst.exists() {
        std::os::unix::fs::symlink(src, dst)
            .unwrap_or_else(|e| panic!("cannot link {} to {}: {e}", dst.display(), src.display()));
    }
}

/// Two `#[test]`s that run `scenario(which: Impl)`: `$ours` with our build of the plugin
/// under test, `$reference` with the reference one.
macro_rules! ours_and_reference {
    ($scenario:ident, $ours:ident, $reference:ident) => {
        #[test]
        fn $ours() {
            $scenario(Impl::Ours);
        }

        #[test]
        fn $reference() {
            $scenario(Impl::Reference);
        }
    };
}
