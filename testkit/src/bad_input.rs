//! Bad input the host must refuse with a clear message and without a panic, shared by the
//! tests that exercise one subsystem and by the suite that re-runs them all
//! (`host/tests/bad_input.rs`).

use std::{fs, path::Path};

use crate::{deploy, deploy_bytes, fixture};

/// Turns `dir/name` into a bad plugin file.
pub type MakeBad = Box<dyn Fn(&Path, &str)>;

/// A bad plugin file: `apply` turns `dir/name` into it; the refusal must contain
/// `expected` (and name the file).
pub struct BadPluginFile {
    pub what: &'static str,
    pub expected: &'static str,
    pub apply: MakeBad,
}

/// Every bad plugin file case: not an ELF file, empty, truncated, a directory, a library
/// without the plugin root module, and a library holding another plugin than the one
/// configured (`daz_fixture_panicky`'s, so not for a slot named `panicky`).
pub fn plugin_files() -> Vec<BadPluginFile> {
    let v2 = fs::read(fixture("daz_fixture_v2")).expect("the v2 fixture is built");
    let half = v2[..v2.len() / 2].to_vec();
    let remove_dir = |d: &Path, name: &str| {
        let p = d.join(name);
        if p.is_dir() {
            fs::remove_dir(&p).expect("remove dir");
        }
    };
    vec![
        BadPluginFile {
            what: "not an ELF",
            expected: "not an ELF file",
            apply: Box::new(move |d, n| {
                remove_dir(d, n);
                deploy_bytes(b"#!/bin/sh\necho not a plugin\n", d, n)
            }),
        },
        BadPluginFile {
            what: "empty",
            expected: "the file is empty",
            apply: Box::new(move |d, n| {
                remove_dir(d, n);
                deploy_bytes(b"", d, n)
            }),
        },
        BadPluginFile {
            what: "truncated",
            expected: "truncated",
            apply: Box::new(move |d, n| {
                remove_dir(d, n);
                deploy_bytes(&half, d, n)
            }),
        },
        BadPluginFile {
            what: "directory",
            expected: "not a regular file",
            apply: Box::new(|d, n| {
                let p = d.join(n);
                if !p.is_dir() {
                    fs::remove_file(&p).ok();
                    fs::create_dir(&p).expect("mkdir");
                }
            }),
        },
        BadPluginFile {
            what: "missing root module",
            expected: "not a daz plugin",
            apply: Box::new(move |d, n| {
                remove_dir(d, n);
                deploy(&fixture("daz_fixture_not_a_plugin"), d, n)
            }),
        },
        BadPluginFile {
            what: "wrong plugin inside",
            expected: "contains plugin \"panicky\"",
            apply: Box::new(move |d, n| {
                remove_dir(d, n);
                deploy(&fixture("daz_fixture_panicky"), d, n)
            }),
        },
    ]
}

/// Bad `plugins.toml` files: `(what, text, substrings the error must contain)`. Every
/// error names the line or the table, the key, and what would fix it.
pub fn config_files() -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    vec![
        ("not TOML", "[host\nplugin_dir = 1\n", &["line 1"]),
        (
            "unknown key",
            "[host]\npreflite = true\n",
            &["line 2", "preflite", "preflight"],
        ),
        (
            "wrong type",
            "[host]\ndebounce_ms = \"fast\"\n",
            &["line 2", "debounce_ms"],
        ),
        (
            "plugin without a file",
            "[plugins.x]\nenabled = true\n",
            &["file"],
        ),
        (
            "bad plugin name",
            "[plugins.Bad]\nfile = \"x.so\"\n",
            &["[plugins.Bad]", "rename"],
        ),
        (
            "bad log level",
            "[plugins.x]\nfile = \"x.so\"\nlog_level = \"loud\"\n",
            &["line 3", "log_level", "`debug`"],
        ),
        (
            "password in the file",
            "[[rooms]]\nsite = \"https://cytu.be\"\nchannel = \"c\"\nusername = \"bot\"\npassword = \"hunter2\"\n",
            &["line 5", "password", "_env"],
        ),
        (
            "bad channel",
            "[[rooms]]\nsite = \"https://cytu.be\"\nchannel = \"no spaces\"\n",
            &["channel", "1-30"],
        ),
        (
            "bad site",
            "[[rooms]]\nsite = \"cytu.be\"\nchannel = \"c\"\n",
            &["site", "https://cytu.be"],
        ),
    ]
}

/// SQL service requests with bad shapes: `(subject, payload, substring of the error
/// reply)`.
pub fn sql_requests() -> Vec<(&'static str, serde_json::Value, &'static str)> {
    use serde_json::json;
    vec![
        ("sql.query", json!("SELECT 1"), ""),
        ("sql.query", json!({}), "sql"),
        ("sql.query", json!({"sql": 42}), "sql"),
        (
            "sql.query",
            json!({"sql": "SELECT $1", "params": [{"type": "nope", "value": 1}]}),
            "",
        ),
        (
            "sql.query",
            json!({"sql": "SELECT $1", "params": "not a list"}),
            "",
        ),
        ("sql.query", json!({"sql": "SELEC nonsense"}), ""),
        ("sql.batch", json!({"statements": 3}), ""),
        ("sql.migrate", json!({"migrations": [{"version": "x"}]}), ""),
    ]
}
