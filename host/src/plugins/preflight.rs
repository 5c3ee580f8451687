//! Preflight: load a plugin file in a child process before the host loads it.
//!
//! A library can crash whoever loads it (a bad static initialiser, a truncated file that
//! slipped past the checks, a segfault in its root-module constructor). The child — this
//! same executable run as `daz __preflight FILE` — loads the file with exactly the
//! host's loader and prints the metadata or the precise error as one JSON line. A crash
//! costs the child, not the host. Measured cost: a few milliseconds.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::loader::{self, LoadError, PluginMeta};

/// The child's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreflightReport {
    /// Loaded and checked.
    Ok(PluginMeta),
    /// Refused.
    Err(LoadError),
}

/// Runs in the child: check and load `file`, print the report, return the exit code.
pub fn run_child(file: &Path) -> i32 {
    let report = check_in_process(file);
    let code = i32::from(matches!(report, PreflightReport::Err(_)));
    match serde_json::to_string(&report) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("cannot encode the preflight report: {e}");
            return 2;
        }
    }
    code
}

/// Loads `file` in this process with every check the host runs.
pub fn check_in_process(file: &Path) -> PreflightReport {
    let result = (|| {
        let bytes = std::fs::read(file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound {
                path: file.to_owned(),
            },
            _ if file.is_dir() => LoadError::NotAFile {
                path: file.to_owned(),
            },
            _ => LoadError::Io {
                what: "cannot read".to_owned(),
                path: file.to_owned(),
                why: e.to_string(),
            },
        })?;
        loader::check_elf(file, &bytes)?;
        // The parent hashed the file already; the child only needs to load it.
        loader::load_library(file, file, "", bytes.len() as u64).map(|lib| lib.meta)
    })();
    match result {
        Ok(meta) => PreflightReport::Ok(meta),
        Err(e) => PreflightReport::Err(e),
    }
}

/// Runs the preflight child on `copy` (reporting errors against `watched`), with a
/// timeout.
pub fn run(
    exe: &Path,
    copy: &Path,
    watched: &Path,
    timeout: Duration,
) -> Result<PluginMeta, LoadError> {
    let fail = |why: String| LoadError::Preflight {
        path: watched.to_owned(),
        why,
    };
    let child = Command::new(exe)
        .arg("__preflight")
        .arg(copy)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", exe.display())))?;
    let pid = child.id();
    // Wait on a helper thread so the timeout needs no polling.
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("daz-preflight".to_owned())
        .spawn(move || {
            let _ = tx.send(child.wait_with_output());
        })
        .map_err(|e| fail(format!("cannot start a thread: {e}")))?;
    let output = match rx.recv_timeout(timeout) {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(fail(format!("cannot wait for the child: {e}"))),
        Err(_) => {
            // SAFETY: kill(2) on the child's pid; the child is not reaped yet (the helper
            // thread reaps it), so the pid cannot have been reused.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            return Err(fail(format!(
                "loading it did not finish within {} ms (a static initialiser that hangs?)",
                timeout.as_millis()
            )));
        }
    };
    let status = output.status;
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    let line = out.lines().rev().find(|l| l.starts_with('{'));
    match line.map(serde_json::from_str::<PreflightReport>) {
        Some(Ok(PreflightReport::Ok(meta))) => Ok(meta),
        Some(Ok(PreflightReport::Err(mut e))) => {
            retarget(&mut e, watched);
            Err(e)
        }
        _ => {
            use std::os::unix::process::ExitStatusExt;
            let how = match status.signal() {
                Some(sig) => format!("loading it crashed the preflight process (signal {sig})"),
                None => format!("the preflight process exited with {status}"),
            };
            let tail: String = err.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
            Err(fail(if tail.is_empty() {
                how
            } else {
                format!("{how}: {tail}")
            }))
        }
    }
}

/// Errors from the child name the private copy; report the watched file instead.
fn retarget(e: &mut LoadError, watched: &Path) {
    use LoadError::*;
    match e {
        NotFound { path }
        | NotAFile { path }
        | Untrusted { path, .. }
        | Unstable { path }
        | PinMismatch { path, .. }
        | NotALibrary { path, .. }
        | Open { path, .. }
        | NotAPlugin { path }
        | IncompatibleVersion { path, .. }
        | AbiStableMismatch { path, .. }
        | AbiMismatch { path, .. }
        | BadMetadata { path, .. }
        | Preflight { path, .. }
        | Io { path, .. } => *path = watched.to_owned(),
    }
}
