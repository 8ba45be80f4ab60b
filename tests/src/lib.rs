//! Shared helpers for Ferry's cross-crate tests: where the repository is, whether the test
//! script promised that optional tools are installed.

use std::path::PathBuf;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// `scripts/test` installs every tool the tests need and sets `FERRY_TEST_FULL=1`; there a
/// missing tool is a failure. In a bare `cargo test` the test is skipped with a loud message.
pub fn require_tool(name: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var("FERRY_TEST_FULL").as_deref() == Ok("1") {
        panic!(
            "{name} is required here (FERRY_TEST_FULL=1) but is not installed: run scripts/test"
        );
    }
    eprintln!("SKIPPED: {name} is not installed; run scripts/test to install it and run this test");
    false
}

pub mod etcd;
pub mod postgres;
pub mod specs;
pub mod sshd;
