//! `daz new-plugin NAME [--path DIR]`: a standalone plugin crate, from templates compiled
//! into the binary.
//!
//! The crate builds outside any workspace: its own `Cargo.toml` (cdylib + rlib, a release
//! profile fit for plugins, an empty `[workspace]` so that a surrounding workspace does
//! not capture it), `src/lib.rs` (the example plugin), a harness test with chat examples,
//! and a README.
//!
//! The daz crates are not published on crates.io, so the SDK dependency points at a
//! source of the SDK this binary speaks: by default its own source tree (by path), which
//! the binary knows when it was built from a checkout that still exists; otherwise (or
//! with `--sdk-git`) a git repository. With the source tree known, its `Cargo.lock` is
//! copied into the new crate too, so the plugin builds with the exact dependency versions
//! the host was built and tested with (and without fetching an index).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

/// Where the new crate gets the SDK from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A checkout's `plugin-api/` directory.
    Path(PathBuf),
    /// A git repository holding the daz workspace (cargo finds the crate in it).
    Git {
        /// The repository URL.
        url: String,
        /// A branch, tag or commit, if any.
        rev: Option<String>,
    },
}

/// The workspace this binary was built from, if it still exists.
pub fn source_tree() -> Option<PathBuf> {
    let host = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = host.parent()?;
    root.join("plugin-api")
        .join("Cargo.toml")
        .is_file()
        .then(|| root.to_owned())
}

/// The SDK version this binary speaks (the `daz-plugin-api` it was built with).
pub fn sdk_version() -> &'static str {
    daz_plugin_api::__private::SDK_VERSION
}

/// What `daz new-plugin` was asked for.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// The plugin's name (its `[plugins.<name>]` table and its crate name).
    pub name: String,
    /// The directory to create (default `./<name>`).
    pub path: Option<PathBuf>,
    /// Where the SDK comes from (default: this binary's source tree).
    pub sdk: Option<SdkSource>,
}

/// What was created.
#[derive(Debug)]
pub struct Created {
    /// The crate's directory.
    pub dir: PathBuf,
    /// The SDK source written into its `Cargo.toml`.
    pub sdk: SdkSource,
    /// The library file `cargo build --release` will produce, relative to `dir`.
    pub release_lib: PathBuf,
}

/// `Hello` for `hello`, `TellRemind` for `tell-remind` / `tell_remind`.
fn type_name(name: &str) -> String {
    let mut out = String::new();
    for part in name.split(['-', '_']).filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert_str(0, "Plugin");
    }
    out
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn dependency(sdk: &SdkSource, testing: bool) -> String {
    let version = sdk_version();
    let features = if testing {
        ", features = [\"testing\"]"
    } else {
        ""
    };
    match sdk {
        SdkSource::Path(p) => format!(
            "{{ version = \"{version}\", path = {}{features} }}",
            toml_string(&p.display().to_string())
        ),
        SdkSource::Git { url, rev } => format!(
            "{{ version = \"{version}\", git = {}{}{features} }}",
            toml_string(url),
            rev.as_ref()
                .map(|r| format!(", rev = {}", toml_string(r)))
                .unwrap_or_default()
        ),
    }
}

fn describe(sdk: &SdkSource) -> String {
    match sdk {
        SdkSource::Path(p) => format!(
            "taken by path from the daz source tree at {} (the crates are not published)",
            p.display()
        ),
        SdkSource::Git { url, .. } => {
            format!("taken from the daz git repository {url} (the crates are not published)")
        }
    }
}

const CARGO_TOML: &str = include_str!("template/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("template/src/lib.rs.tmpl");
const CHAT_TEST: &str = include_str!("template/tests/chat.rs.tmpl");
const README: &str = include_str!("template/README.md.tmpl");
const GITIGNORE: &str = include_str!("template/gitignore.tmpl");

/// Creates the crate. Refuses an invalid name and a directory that exists and is not
/// empty.
pub fn create(req: &NewPlugin) -> anyhow::Result<Created> {
    if !crate::config::valid_plugin_name(&req.name) {
        bail!(
            "plugin name {:?} is not 1-64 of a-z, 0-9, '-', '_'; it becomes the \
             [plugins.<name>] table and the crate name",
            req.name
        );
    }
    let dir = req.path.clone().unwrap_or_else(|| PathBuf::from(&req.name));
    if dir.exists()
        && fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty; pick another --path",
            dir.display()
        );
    }
    let tree = source_tree();
    let sdk = match (&req.sdk, &tree) {
        (Some(s), _) => s.clone(),
        (None, Some(root)) => SdkSource::Path(root.join("plugin-api")),
        (None, None) => bail!(
            "this daz binary was not built from a source tree that still exists, so it \
             cannot point the new crate at its SDK by path; pass --sdk-git URL (the daz \
             repository) or --sdk-path DIR (a checkout's plugin-api/)"
        ),
    };
    let lib = req.name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{{crate}}", &req.name)
            .replace("{{name}}", &req.name)
            .replace("{{lib}}", &lib)
            .replace("{{Type}}", &type_name(&req.name))
            .replace("{{sdk_testing}}", &dependency(&sdk, true))
            .replace("{{sdk_source}}", &describe(&sdk))
            .replace("{{sdk}}", &dependency(&sdk, false))
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("tests/chat.rs", fill(CHAT_TEST)),
        ("README.md", fill(README)),
        (".gitignore", fill(GITIGNORE)),
    ];
    for (file, text) in &files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // The same dependency versions as the host (path SDK only: a git SDK brings its
    // own workspace lock to compare against).
    if let (SdkSource::Path(_), Some(root)) = (&sdk, &tree) {
        let lock = root.join("Cargo.lock");
        if lock.is_file() {
            fs::copy(&lock, dir.join("Cargo.lock"))
                .with_context(|| format!("cannot copy {}", lock.display()))?;
        }
    }
    Ok(Created {
        release_lib: Path::new("target")
            .join("release")
            .join(format!("lib{lib}.so")),
        dir,
        sdk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_camel_case_identifiers() {
        assert_eq!(type_name("hello"), "Hello");
        assert_eq!(type_name("tell-remind"), "TellRemind");
        assert_eq!(type_name("a_b"), "AB");
        assert_eq!(type_name("8ball"), "Plugin8ball");
    }

    #[test]
    fn bad_names_and_non_empty_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let req = |name: &str, path: PathBuf| NewPlugin {
            name: name.to_owned(),
            path: Some(path),
            sdk: Some(SdkSource::Path(PathBuf::from("/sdk"))),
        };
        let err = create(&req("Bad Name", dir.path().join("x"))).unwrap_err();
        assert!(err.to_string().contains("is not 1-64"), "{err}");
        fs::write(dir.path().join("file"), "x").unwrap();
        let err = create(&req("ok", dir.path().to_owned())).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    }

    #[test]
    fn git_source_is_written_as_a_git_dependency() {
        let dir = tempfile::tempdir().unwrap();
        let created = create(&NewPlugin {
            name: "tell".to_owned(),
            path: Some(dir.path().join("tell")),
            sdk: Some(SdkSource::Git {
                url: "https://example.invalid/daz.git".to_owned(),
                rev: Some("v1".to_owned()),
            }),
        })
        .unwrap();
        let manifest = fs::read_to_string(created.dir.join("Cargo.toml")).unwrap();
        let parsed: toml::Value = toml::from_str(&manifest).unwrap();
        let dep = &parsed["dependencies"]["daz-plugin-api"];
        assert_eq!(dep["git"].as_str(), Some("https://example.invalid/daz.git"));
        assert_eq!(dep["rev"].as_str(), Some("v1"));
        assert_eq!(
            parsed["dev-dependencies"]["daz-plugin-api"]["features"][0].as_str(),
            Some("testing")
        );
        assert!(!created.dir.join("Cargo.lock").exists());
    }
}
