//! Running the real `daz` binary against the simulator: its configuration with the
//! storage plugin, the process (logs to a file), the journal on disk, and `/metrics`.

use std::process::{Child, Command, Stdio};

use daz_testkit::{binary::daz_binary, process::http_get};

pub fn write_config(dir: &std::path::Path, url: &str, site: Option<&str>) -> std::path::PathBuf {
    write_config_with(dir, url, site, "[http]\nenabled = false\n", 50)
}

/// The host's configuration: `http` is its `[http]` table; `spill_after_ms` is how long
/// the storage plugin waits, with the database down, before memory lets go of queued
/// events.
pub fn write_config_with(
    dir: &std::path::Path,
    url: &str,
    site: Option<&str>,
    http: &str,
    spill_after_ms: u64,
) -> std::path::PathBuf {
    let rooms = site
        .map(|s| format!("[[rooms]]\nsite = \"{s}\"\nchannel = \"room\"\n"))
        .unwrap_or_default();
    let text = format!(
        "[host]\nplugin_dir = \"plugins\"\nruntime_dir = \"runtime\"\npreflight = false\nwatch = false\n\
         {http}{rooms}\
         [plugins.storage]\nfile = \"libdaz_plugin_storage.so\"\n[plugins.storage.config]\n\
         database_url = \"{url}\"\nprefer_env = false\njournal_dir = \"{}\"\n\
         spill_after_ms = {spill_after_ms}\nconnect_timeout_ms = 300\nflush_interval_ms = 20\n",
        dir.join("journal").display()
    );
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `daz run`; its output (logs) goes to `log` when given.
pub fn spawn_daz(
    dir: &std::path::Path,
    config: &std::path::Path,
    log: Option<&std::path::Path>,
) -> Child {
    let out = || match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("log file"),
        ),
        None => Stdio::null(),
    };
    Command::new(daz_binary())
        .current_dir(dir)
        .args(["run", "--config"])
        .arg(config)
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .stdout(out())
        .stderr(out())
        .spawn()
        .expect("daz starts")
}

pub fn journal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("journal"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// The value of an unlabelled counter on the host's `/metrics`, if it answers.
pub fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, text) = http_get(port, "/metrics")?;
    // `name{plugin="storage"} value`
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = match rest.strip_prefix('{') {
            Some(labels) => labels.split_once('}')?.1,
            None => rest,
        };
        rest.trim().parse().ok()
    })
}
