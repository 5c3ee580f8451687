//! Builds the `compat` fixture plugin against deliberately altered copies of the plugin
//! ABI crate (`daz-plugin-abi`) and the SDK (`daz-plugin-api`), to prove which builds the
//! host accepts:
//!
//! * [`Variant::PreviousSdk`] — the SDK at the previous minor version (0.1.0) over the
//!   same ABI crate: must load and run (only the ABI version is checked).
//! * [`Variant::Older`] — an ABI that predates the newest appended root-module field
//!   (`manifest`): must load (prefix types).
//! * [`Variant::ChangedLayout`] — a field of `EventView` changed type: must be refused
//!   with an ABI mismatch.
//! * [`Variant::OldMinor`] — the ABI at the previous minor version (0.1.9): must be
//!   refused as an incompatible version.
//!
//! The copies live under `target/compat-fixtures/<variant>/` so repeated runs reuse the
//! compiled dependencies. Their `Cargo.toml` lists the crates' dependencies concretely
//! (the copies are outside the workspace): adding one to plugin-api means adding it here.

use std::{fs, path::PathBuf, process::Command};

use super::{cargo, workspace};

/// An altered ABI or SDK.
#[derive(Debug, Clone, Copy)]
pub enum Variant {
    /// The SDK at the previous minor version, over the real ABI crate.
    PreviousSdk,
    /// Lacks the newest appended root-module field.
    Older,
    /// `EventView::priority` is a `u16` instead of a `u8`.
    ChangedLayout,
    /// ABI version 0.1.9.
    OldMinor,
}

/// The SDK version [`Variant::PreviousSdk`] is built as: the minor before the current one.
pub const PREVIOUS_SDK_VERSION: &str = "0.1.0";

/// A workspace crate's own version (`plugin-abi`, `plugin-api`), read from its manifest.
pub fn crate_version(dir: &str) -> String {
    let manifest =
        fs::read_to_string(workspace().join(dir).join("Cargo.toml")).expect("read a manifest");
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("the manifest has a version line")
        .to_owned()
}

fn replace_once(text: &str, from: &str, to: &str, file: &str) -> String {
    assert!(
        text.contains(from),
        "plugin-api changed: {file} no longer contains {from:?}; update testkit/src/compat.rs"
    );
    text.replacen(from, to, 1)
}

fn write_if_changed(path: &std::path::Path, text: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }
}

/// Builds the fixture against the variant and returns the library path.
pub fn build(variant: Variant) -> PathBuf {
    // The variants share one target directory: build and copy out one at a time.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let ws = workspace();
    let root = ws.join("target").join("compat-fixtures");
    let name = format!("{variant:?}").to_lowercase();
    let abi_dir = root.join(&name).join("plugin-abi");
    let api_dir = root.join(&name).join("plugin-api");
    let plugin_dir = root.join(&name).join("plugin");

    // The ABI copy: the real source, altered. The previous-SDK variant uses the real one.
    let abi_source = ws.join("plugin-abi").join("src").join("lib.rs");
    let mut abi = fs::read_to_string(&abi_source).expect("plugin-abi/src/lib.rs");
    match variant {
        Variant::Older => {
            let start = abi
                .find("    /// The plugin's manifest as JSON")
                .expect("manifest field docs");
            let end = abi[start..].find("-> RString,\n").expect("manifest field")
                + start
                + "-> RString,\n".len();
            abi.replace_range(start..end, "");
        }
        Variant::ChangedLayout => {
            abi = replace_once(
                &abi,
                "    /// 0 normal, 1 high, 2 urgent, 3 critical.\n    pub priority: u8,\n    /// Free-form tags",
                "    /// 0 normal, 1 high, 2 urgent, 3 critical.\n    pub priority: u16,\n    /// Free-form tags",
                "plugin-abi/src/lib.rs",
            );
        }
        Variant::PreviousSdk | Variant::OldMinor => {}
    }
    write_if_changed(&abi_dir.join("src").join("lib.rs"), &abi);
    let abi_version = match variant {
        Variant::OldMinor => "0.1.9".to_owned(),
        _ => crate_version("plugin-abi"),
    };
    write_if_changed(
        &abi_dir.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"daz-plugin-abi\"\nversion = \"{abi_version}\"\nedition = \"2024\"\npublish = false\n\n[dependencies]\nabi_stable = \"0.11.3\"\n"
        ),
    );
    let abi_path = match variant {
        Variant::PreviousSdk => ws.join("plugin-abi"),
        _ => abi_dir.clone(),
    };

    // The SDK copy: the real sources, altered to match the ABI copy.
    let src = ws.join("plugin-api").join("src");
    for entry in fs::read_dir(&src).expect("plugin-api/src") {
        let entry = entry.expect("entry");
        let file = entry.file_name().to_string_lossy().into_owned();
        let mut text = fs::read_to_string(entry.path()).expect("read");
        match (variant, file.as_str()) {
            (Variant::Older, "export.rs") => {
                text = replace_once(&text, "        manifest: manifest::<P>,\n", "", &file);
            }
            (Variant::ChangedLayout, "event.rs") => {
                // Only the EventView constructor and reader change; OutMessage keeps u8.
                text = replace_once(
                    &text,
                    "            priority: self.priority.as_u8(),\n            tags: RSlice::from_slice(&tags),\n            correlation_id: RStr::from_str(&self.correlation_id),",
                    "            priority: u16::from(self.priority.as_u8()),\n            tags: RSlice::from_slice(&tags),\n            correlation_id: RStr::from_str(&self.correlation_id),",
                    &file,
                );
                text = replace_once(
                    &text,
                    "Priority::from_u8(self.view.priority)",
                    "Priority::from_u8(self.view.priority as u8)",
                    &file,
                );
            }
            _ => {}
        }
        write_if_changed(&api_dir.join("src").join(&file), &text);
    }
    // The previous SDK minor; the other variants keep the SDK's own version so that only
    // the ABI differs.
    let sdk_version = match variant {
        Variant::PreviousSdk => PREVIOUS_SDK_VERSION.to_owned(),
        _ => crate_version("plugin-api"),
    };
    write_if_changed(
        &api_dir.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"daz-plugin-api\"\nversion = \"{sdk_version}\"\nedition = \"2024\"\npublish = false\n\n[features]\ntesting = []\n\n[dependencies]\nabi_stable = \"0.11.3\"\nserde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = {{ version = \"1\", features = [\"raw_value\"] }}\ndaz-cytube-proto = {{ path = {:?} }}\ndaz-plugin-abi = {{ path = {:?} }}\n",
            ws.join("cytube-proto").display().to_string(),
            abi_path.display().to_string(),
        ),
    );
    // The plugin: the template's source, pointed at the copy.
    let template = ws.join("plugins").join("fixtures").join("compat");
    write_if_changed(
        &plugin_dir.join("src").join("lib.rs"),
        &fs::read_to_string(template.join("src").join("lib.rs")).expect("template"),
    );
    write_if_changed(
        &plugin_dir.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"daz-fixture-compat\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\ndaz-plugin-api = {{ path = \"{}\" }}\n\n[workspace]\n",
            api_dir.display()
        ),
    );
    if !plugin_dir.join("Cargo.lock").exists() {
        // Same dependency versions as the workspace.
        fs::copy(ws.join("Cargo.lock"), plugin_dir.join("Cargo.lock")).expect("copy lock");
    }
    let target = root.join("target");
    let status = Command::new(cargo())
        .current_dir(&plugin_dir)
        .args(["build", "--quiet", "--target-dir"])
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building the compat fixture ({variant:?}) failed"
    );
    // All variants share a target dir; copy the result out before the next build
    // overwrites it.
    let built = target.join("debug").join("libdaz_fixture_compat.so");
    let out = root.join(format!("libcompat_{name}.so"));
    fs::copy(&built, &out).expect("copy built fixture");
    out
}
