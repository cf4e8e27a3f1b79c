//! For the suite's own tests: what a test does when this machine lacks something it needs
//! (root, a tool, a built client). On a developer's machine it skips with the reason; under
//! CI (`CI` set, or `CNI_SUITE_REQUIRE_ROOT`, which `make test` sets) it fails, so a run can
//! never pass by silently skipping what it was meant to prove.

/// True when a missing prerequisite must fail the test rather than skip it.
pub fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("CNI_SUITE_REQUIRE_ROOT").is_some()
}

/// A test cannot run because of `reason`: panics when prerequisites are [`required`], else
/// prints `skipped: <reason>` and returns false (so a test writes `return skip(..)` or
/// `if !ok { return skip(..); }`).
pub fn skip(reason: &str) -> bool {
    if required() {
        panic!("{reason} (a missing prerequisite fails under CI or CNI_SUITE_REQUIRE_ROOT)");
    }
    eprintln!("skipped: {reason}");
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn skip_fails_when_required() {
        // The test process itself may run under CI; check the decision both ways.
        if super::required() {
            assert!(std::panic::catch_unwind(|| super::skip("x")).is_err());
        } else {
            assert!(!super::skip("x"));
        }
    }
}
