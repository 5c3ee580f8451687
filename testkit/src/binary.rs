//! The `daz` binary, for tests that run the host as a separate process (to kill it with
//! SIGKILL, restart it, or read what it prints).

use std::{path::PathBuf, process::Command, sync::Mutex};

use crate::{cargo, workspace};

/// Builds `daz` (`-p daz-host --bin daz`, debug) once per test process into the
/// target directory the test plugins use, and returns its path.
pub fn daz_binary() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.as_ref() {
        return path.clone();
    }
    let target = workspace().join("target").join("test-plugins");
    let status = Command::new(cargo())
        .current_dir(workspace())
        .args([
            "build",
            "--quiet",
            "-p",
            "daz-host",
            "--bin",
            "daz",
            "--target-dir",
        ])
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the daz binary failed");
    let path = target.join("debug").join("daz");
    *built = Some(path.clone());
    path
}
