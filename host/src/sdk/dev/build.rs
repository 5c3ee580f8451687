//! Building the plugin crate for `daz dev`: `cargo build --lib` in the **dev profile**,
//! and the path of the `.so` cargo produced, read from cargo's JSON messages (so a
//! `CARGO_TARGET_DIR`, a surrounding workspace or a `[lib] name` are all honoured).
//!
//! Why the dev profile: after a one-line change cargo recompiles only the plugin crate,
//! unoptimised and incrementally, in a second or two, where a release build re-optimises
//! it (many seconds). The host accepts such a file: it requires `panic = "unwind"` (the
//! dev profile's default; `daz new-plugin` writes it explicitly) and nothing about
//! optimisation. `daz new-plugin`'s dev profile keeps line tables only (panics still name
//! file and line), which keeps the file the host copies and hashes on every swap near
//! 9 MiB for the template; the copy, hash and load of it are well under a second.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::Value;

/// A successful build.
#[derive(Debug, Clone)]
pub struct Built {
    /// The plugin library cargo wrote.
    pub lib: PathBuf,
    /// How long cargo took.
    pub took: Duration,
}

/// The cargo executable (the one running us under `cargo run`, else `cargo`).
fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Builds the crate whose manifest is `manifest`. cargo's diagnostics go to this
/// process's standard error as cargo renders them; a failed build is an error saying
/// so (the caller keeps the version serving).
pub fn build(manifest: &Path) -> anyhow::Result<Built> {
    let started = Instant::now();
    let output = Command::new(cargo())
        .args([
            "build",
            "--lib",
            "--quiet",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo (is it installed and on PATH?)")?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        anyhow::bail!(
            "cargo build failed ({}); see its messages above",
            output.status
        );
    }
    let lib = cdylib(&stdout, manifest).with_context(|| {
        format!(
            "cargo built {} but produced no plugin library; its Cargo.toml needs \
             [lib] crate-type = [\"cdylib\", \"rlib\"]",
            manifest.display()
        )
    })?;
    Ok(Built { lib, took })
}

/// The `.so` of the package at `manifest` among cargo's JSON messages.
fn cdylib(messages: &str, manifest: &Path) -> Option<PathBuf> {
    let ours = std::fs::canonicalize(manifest).unwrap_or_else(|_| manifest.to_owned());
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["manifest_path"]
                .as_str()
                .is_some_and(|p| std::fs::canonicalize(p).is_ok_and(|p| p == ours))
        })
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .collect::<Vec<_>>()
        })
        .find(|f| f.extension().is_some_and(|e| e == "so"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_is_the_cdylib_of_the_package_built() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("Cargo.toml");
        std::fs::write(&manifest, "").unwrap();
        let other = dir.path().join("dep.toml");
        std::fs::write(&other, "").unwrap();
        let msg = |path: &Path, kind: &str, file: &str| {
            serde_json::json!({
                "reason": "compiler-artifact",
                "manifest_path": path,
                "target": { "kind": [kind] },
                "filenames": [file],
            })
            .to_string()
        };
        let messages = [
            msg(&other, "cdylib", "/t/debug/libdep.so"),
            msg(&manifest, "lib", "/t/debug/libhello.rlib"),
            "not json".to_owned(),
            msg(&manifest, "cdylib", "/t/debug/libhello.so"),
            r#"{"reason":"build-finished","success":true}"#.to_owned(),
        ]
        .join("\n");
        assert_eq!(
            cdylib(&messages, &manifest),
            Some(PathBuf::from("/t/debug/libhello.so"))
        );
        assert_eq!(cdylib(&messages, &dir.path().join("nope.toml")), None);
    }
}
