//! Loading a plugin file safely: from "a path changed" to a checked, initialised root
//! module.
//!
//! Facts this code is built around (measured on the project's machines):
//! * Overwriting a loaded library in place (same inode) crashes the host; a truncated or
//!   half-written ELF crashes it inside `dlopen`. So the loader reads the file once,
//!   checks the ELF is complete, and loads a **private byte copy** written under a unique
//!   name — never the watched file itself.
//! * glibc de-duplicates `dlopen` by path and inode: loading "the same file again" returns
//!   the old code. The unique private copy is what makes each version a new library.
//! * abi_stable's `RootModule::load_from_file` caches one library per root-module type
//!   forever. The loader uses the low-level path on every load instead:
//!   `RawLibrary::load_at` → `lib_header_from_raw_library` → `init_root_module`, which
//!   still runs abi_stable's version and layout checks.
//! * Values allocated by a plugin crash the host if used after its library is unmapped,
//!   and unmapping after a layout check is unsafe with abi_stable. Libraries are therefore
//!   never unloaded: [`LoadedLibrary`] keeps the mapping for the life of the process and
//!   the host counts what it keeps.

use std::{
    fs,
    io::Write,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use abi_stable::library::{LibraryError, RawLibrary, lib_header_from_raw_library};
use daz_plugin_abi::PluginModRef;
use daz_plugin_api::Manifest;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a plugin says about itself, copied into host memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginMeta {
    /// The plugin's name.
    pub name: String,
    /// The plugin crate's version.
    pub version: String,
    /// The plugin-api version it was built against.
    pub api_version: String,
    /// Built with `panic = "unwind"`.
    pub panic_unwind: bool,
    /// One line.
    pub description: String,
    /// Declared commands etc. (empty for plugins built before manifests existed).
    pub manifest: Manifest,
}

/// Why a plugin file could not be loaded. The messages say what failed, why, and what
/// to do.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoadError {
    /// No such file.
    #[error(
        "plugin file {path} does not exist; check `file` in plugins.toml and the plugin directory"
    )]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The path is a directory or something else that is not a regular file.
    #[error("{path} is not a regular file; `file` must name a plugin library (.so)")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Permission / ownership refusal.
    #[error("refusing {path}: {why}; fix it with `{fix}`")]
    Untrusted {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
        /// A command that fixes it.
        fix: String,
    },
    /// The file kept changing.
    #[error(
        "{path} is still being written (its size or modification time keeps changing); write it elsewhere and `mv` it into the plugin directory"
    )]
    Unstable {
        /// The file.
        path: PathBuf,
    },
    /// The file does not match the `sha256` pin.
    #[error(
        "{path} has SHA-256 {actual} but plugins.toml pins {expected}; update the pin or deploy the right file"
    )]
    PinMismatch {
        /// The file.
        path: PathBuf,
        /// The pin.
        expected: String,
        /// The file's hash.
        actual: String,
    },
    /// Not an ELF shared library, or a truncated one.
    #[error("{path} is not a loadable plugin library: {why}")]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// `dlopen` failed.
    #[error("cannot load {path}: {why}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        why: String,
    },
    /// The library exports no daz root module.
    #[error(
        "{path} is a shared library but not a daz plugin (no root module); build it with `daz_plugin_api::export_plugin!`"
    )]
    NotAPlugin {
        /// The file.
        path: PathBuf,
    },
    /// The plugin ABI versions differ (the SDK version does not matter).
    #[error(
        "{path} was built against plugin ABI {actual} (crate daz-plugin-abi); this host speaks plugin ABI {expected}; rebuild the plugin with a daz-plugin-api that uses daz-plugin-abi {expected} (the one `daz new-plugin` of this host pins)"
    )]
    IncompatibleVersion {
        /// The file.
        path: PathBuf,
        /// The host's ABI version.
        expected: String,
        /// The plugin's.
        actual: String,
    },
    /// The plugin was built with another abi_stable minor version: its library header
    /// cannot even be read.
    #[error(
        "{path} was built with abi_stable {actual}; this host uses abi_stable {expected}; rebuild the plugin with abi_stable {expected} (run `cargo update` in the plugin crate, or depend only on daz-plugin-api, which brings the right one)"
    )]
    AbiStableMismatch {
        /// The file.
        path: PathBuf,
        /// The host's abi_stable ABI version (`major.minor`).
        expected: String,
        /// The plugin's.
        actual: String,
    },
    /// abi_stable refused the layout.
    #[error(
        "{path} was built against an incompatible plugin ABI (its types differ from this host's: {detail}); rebuild the plugin with a daz-plugin-api that uses daz-plugin-abi {expected}"
    )]
    AbiMismatch {
        /// The file.
        path: PathBuf,
        /// The host's ABI version.
        expected: String,
        /// abi_stable's first lines.
        detail: String,
    },
    /// Metadata says no.
    #[error("{path}: {why}")]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The preflight child process refused or crashed.
    #[error("preflight of {path} failed: {why}")]
    Preflight {
        /// The file.
        path: PathBuf,
        /// What happened.
        why: String,
    },
    /// Reading or copying failed.
    #[error("{what} {path}: {why}")]
    Io {
        /// What was being done.
        what: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        why: String,
    },
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> LoadError {
    LoadError::Io {
        what: what.to_owned(),
        path: path.to_owned(),
        why: e.to_string(),
    }
}

/// A plugin file read into memory and checked, not yet loaded.
pub struct CandidateFile {
    /// The watched file.
    pub path: PathBuf,
    /// Its bytes, read once (every later step uses these, not the file).
    pub bytes: Vec<u8>,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
}

/// A loaded, checked plugin library. Never unloaded (see the module docs).
pub struct LoadedLibrary {
    /// Metadata copied out of the library.
    pub meta: PluginMeta,
    /// The root module (points into the library, which stays mapped).
    pub module: PluginModRef,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The watched file it came from.
    pub source: PathBuf,
    /// When it was loaded (unix ms).
    pub loaded_at_ms: i64,
    /// Mapped but not serving (superseded, rolled back, refused after loading).
    leaked: std::sync::atomic::AtomicBool,
}

impl LoadedLibrary {
    /// Records that this library serves again; returns whether it was counted as leaked.
    pub fn mark_serving(&self, metrics: &crate::metrics::Metrics) -> bool {
        let was = self.leaked.swap(false, Ordering::AcqRel);
        if was {
            metrics.leaked_libraries.dec();
            metrics
                .leaked_bytes
                .sub(i64::try_from(self.size).unwrap_or(i64::MAX));
        }
        was
    }

    /// Records that this library no longer serves (it stays mapped); returns whether it
    /// was newly counted as leaked.
    pub fn mark_retired(&self, metrics: &crate::metrics::Metrics) -> bool {
        let was = self.leaked.swap(true, Ordering::AcqRel);
        if !was {
            metrics.leaked_libraries.inc();
            metrics
                .leaked_bytes
                .add(i64::try_from(self.size).unwrap_or(i64::MAX));
        }
        !was
    }
}

impl std::fmt::Debug for LoadedLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedLibrary")
            .field("meta", &self.meta)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// The largest plugin file the host reads (a debug build of a big plugin is tens of
/// MiB; anything near this is not a plugin and must not be read into memory).
pub const MAX_PLUGIN_BYTES: u64 = 512 << 20;

/// Checks the owner and mode of a file or directory already `stat`ed (`md` describes
/// `path`): owned by this user or root, and not writable by group or others. A
/// directory writable by others passes only with the sticky bit (as `/tmp`): there,
/// nobody but an entry's owner can rename or remove it.
fn check_owner_and_mode(path: &Path, md: &fs::Metadata) -> Result<(), LoadError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if md.uid() != me && md.uid() != 0 {
        return Err(LoadError::Untrusted {
            path: path.to_owned(),
            why: format!(
                "it is owned by uid {}, not by this user (uid {me}) or root",
                md.uid()
            ),
            fix: format!("chown {me} {}", path.display()),
        });
    }
    let mode = md.permissions().mode();
    let sticky_dir = md.is_dir() && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky_dir {
        return Err(LoadError::Untrusted {
            path: path.to_owned(),
            why: format!(
                "it is writable by {} (mode {:o}){}",
                if mode & 0o002 != 0 {
                    "others"
                } else {
                    "its group"
                },
                mode & 0o7777,
                if md.is_dir() {
                    " without the sticky bit, so they could replace the plugin file in it"
                } else {
                    ""
                }
            ),
            fix: format!("chmod go-w {}", path.display()),
        });
    }
    Ok(())
}

/// Checks that `path` (a file or a directory) is owned by this user (or root) and not
/// writable by group or others (a directory may be, with the sticky bit). Follows
/// symlinks; for a plugin file use [`read_trusted`], which checks what it opens.
pub fn check_trusted(path: &Path) -> Result<(), LoadError> {
    let md = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadError::NotFound {
            path: path.to_owned(),
        },
        _ => io_err("cannot inspect", path, e),
    })?;
    check_owner_and_mode(path, &md)
}

/// Checks `dir` and every directory above it up to `/`, as OpenSSH's `StrictModes`
/// checks the path to `authorized_keys`: if any of them could be changed by another
/// user, so could the file below it. `dir` must be absolute and free of symlinks
/// (canonical).
fn check_directory_chain(dir: &Path) -> Result<(), LoadError> {
    for d in dir.ancestors() {
        check_trusted(d)?;
    }
    Ok(())
}

fn not_found_or(path: &Path, what: &str, e: std::io::Error) -> LoadError {
    match e.kind() {
        std::io::ErrorKind::NotFound => LoadError::NotFound {
            path: path.to_owned(),
        },
        _ => io_err(what, path, e),
    }
}

/// Reads a plugin file the way it can be trusted, once it has stopped changing.
///
/// Trust is decided on what is actually read, never on a path looked at earlier: the
/// path is resolved (symlinks followed); with `enforce`, the directory it was
/// configured in and every directory above the resolved file, up to `/`, must be
/// trusted ([`check_trusted`]), so no other user can swap the file by renaming; the
/// resolved file is then opened ONCE (`O_NOFOLLOW`, so a last-moment symlink is not
/// followed), the open descriptor is `fstat`ed (a regular file, and with `enforce` the
/// same owner and mode rules), it must stay unchanged for two `fstat`s `interval` apart
/// (up to `attempts` tries: a file still being written), and the bytes hashed and later
/// copied are read from that same descriptor. Nothing is read by path again: the
/// loader and the preflight child load the private copy of these bytes.
pub fn read_trusted(
    path: &Path,
    enforce: bool,
    interval: Duration,
    attempts: u32,
) -> Result<CandidateFile, LoadError> {
    use std::io::{Read, Seek};
    let resolved = fs::canonicalize(path).map_err(|e| not_found_or(path, "cannot resolve", e))?;
    if enforce {
        // The directory the file is configured in (a symlink there could be replaced)…
        if let Some(parent) = path.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            let parent =
                fs::canonicalize(parent).map_err(|e| not_found_or(parent, "cannot resolve", e))?;
            check_directory_chain(&parent)?;
        }
        // …and every directory above the file actually opened.
        if let Some(parent) = resolved.parent() {
            check_directory_chain(parent)?;
        }
    }
    let mut file = fs::OpenOptions::new()
        .read(true)
        // A FIFO would block the open; a symlink put in place after the resolution is
        // refused rather than followed.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&resolved)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => LoadError::Untrusted {
                path: resolved.clone(),
                why: "it was replaced by a symlink while being opened".to_owned(),
                fix: format!("ls -l {}", resolved.display()),
            },
            _ => not_found_or(&resolved, "cannot open", e),
        })?;
    let stat = |f: &fs::File| -> Result<(u64, i64, i64), LoadError> {
        let md = f
            .metadata()
            .map_err(|e| io_err("cannot inspect", &resolved, e))?;
        if !md.is_file() {
            return Err(LoadError::NotAFile {
                path: path.to_owned(),
            });
        }
        if enforce {
            check_owner_and_mode(&resolved, &md)?;
        }
        if md.len() > MAX_PLUGIN_BYTES {
            return Err(LoadError::NotALibrary {
                path: path.to_owned(),
                why: format!(
                    "it is {} bytes; a plugin file is at most {MAX_PLUGIN_BYTES}",
                    md.len()
                ),
            });
        }
        Ok((md.len(), md.mtime(), md.mtime_nsec()))
    };
    let mut before = stat(&file)?;
    for _ in 0..attempts.max(1) {
        std::thread::sleep(interval);
        let after = stat(&file)?;
        if after == before {
            let mut bytes = Vec::with_capacity(usize::try_from(after.0).unwrap_or(0));
            file.seek(std::io::SeekFrom::Start(0))
                .map_err(|e| io_err("cannot read", &resolved, e))?;
            (&mut file)
                .take(MAX_PLUGIN_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| io_err("cannot read", &resolved, e))?;
            // The read must match the stable size and the file must not have changed
            // while it was read.
            if bytes.len() as u64 == after.0 && stat(&file)? == after {
                let sha256 = hex::encode(Sha256::digest(&bytes));
                return Ok(CandidateFile {
                    path: path.to_owned(),
                    bytes,
                    sha256,
                });
            }
            before = stat(&file)?;
            continue;
        }
        before = after;
    }
    Err(LoadError::Unstable {
        path: path.to_owned(),
    })
}

/// Checks that the bytes are a complete ELF shared object: every segment and the
/// section header table lie inside the file (a truncated copy would crash `dlopen`).
pub fn check_elf(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    let bad = |why: String| LoadError::NotALibrary {
        path: path.to_owned(),
        why,
    };
    if bytes.is_empty() {
        return Err(bad("the file is empty".to_owned()));
    }
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err(bad("it is not an ELF file (wrong magic bytes)".to_owned()));
    }
    let len = bytes.len() as u64;
    let header = goblin::elf::Elf::parse_header(bytes)
        .map_err(|e| bad(format!("malformed ELF header: {e}")))?;
    if header.e_type != goblin::elf::header::ET_DYN {
        return Err(bad("it is an ELF file but not a shared library".to_owned()));
    }
    // The header says how long the file must be; a shorter file was cut off.
    let table_end =
        |off: u64, num: u16, size: u16| off.checked_add(u64::from(num) * u64::from(size));
    for (what, end) in [
        (
            "program header table",
            table_end(header.e_phoff, header.e_phnum, header.e_phentsize),
        ),
        (
            "section header table",
            table_end(header.e_shoff, header.e_shnum, header.e_shentsize),
        ),
    ] {
        if end.is_none_or(|end| end > len) {
            return Err(bad(format!(
                "it is truncated: its {what} ends past the file's {len} bytes"
            )));
        }
    }
    let elf = goblin::elf::Elf::parse(bytes).map_err(|e| bad(format!("malformed ELF: {e}")))?;
    for ph in &elf.program_headers {
        let end = ph.p_offset.checked_add(ph.p_filesz);
        if end.is_none_or(|end| end > len) {
            return Err(bad(format!(
                "it is truncated: a segment ends at byte {} but the file has {len} bytes",
                end.map_or("overflow".to_owned(), |e| e.to_string())
            )));
        }
    }
    if elf.dynamic.is_none() {
        return Err(bad("it has no dynamic section".to_owned()));
    }
    Ok(())
}

static COPY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Prepares the private directory the per-version copies live in (mode 0700).
pub fn prepare_runtime_dir(dir: &Path) -> Result<(), LoadError> {
    fs::create_dir_all(dir).map_err(|e| io_err("cannot create the runtime directory", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err("cannot restrict the runtime directory", dir, e))?;
    Ok(())
}

/// Writes the bytes to a new private file with a unique name (`O_EXCL`, mode 0500) and
/// returns its path.
pub fn write_private_copy(
    dir: &Path,
    name: &str,
    candidate: &CandidateFile,
) -> Result<PathBuf, LoadError> {
    prepare_runtime_dir(dir)?;
    let n = COPY_COUNTER.fetch_add(1, Ordering::Relaxed);
    let file = dir.join(format!(
        "{name}-{}-{}-{n}.so",
        &candidate.sha256[..12],
        std::process::id()
    ));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o500)
        .open(&file)
        .map_err(|e| io_err("cannot create the private copy", &file, e))?;
    // No fsync: the copy only has to outlive this process's mapping of it, and after a
    // crash the host starts from the watched files again.
    f.write_all(&candidate.bytes)
        .map_err(|e| io_err("cannot write the private copy", &file, e))?;
    Ok(file)
}

fn map_library_error(path: &Path, e: LibraryError) -> LoadError {
    let expected = daz_plugin_abi::ABI_VERSION.to_owned();
    match e {
        LibraryError::OpenError { err, .. } => LoadError::Open {
            path: path.to_owned(),
            why: err.to_string(),
        },
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin {
            path: path.to_owned(),
        },
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
            LoadError::IncompatibleVersion {
                path: path.to_owned(),
                expected,
                actual: actual_version.to_string(),
            }
        }
        LibraryError::InvalidAbiHeader(found) => {
            // abi_stable's own message is two `{:#?}` dumps of the headers (~80 lines);
            // the versions are all the operator needs.
            let ours = abi_stable::library::AbiHeader::VALUE;
            if found.magic_string == ours.magic_string {
                LoadError::AbiStableMismatch {
                    path: path.to_owned(),
                    expected: format!("{}.{}", ours.abi_major, ours.abi_minor),
                    actual: format!("{}.{}", found.abi_major, found.abi_minor),
                }
            } else {
                LoadError::NotAPlugin {
                    path: path.to_owned(),
                }
            }
        }
        LibraryError::AbiInstability(detail) => LoadError::AbiMismatch {
            path: path.to_owned(),
            expected,
            detail: summarize_abi_errors(&detail.to_string()),
        },
        other => LoadError::Open {
            path: path.to_owned(),
            why: other.to_string(),
        },
    }
}

/// Boils abi_stable's long layout report down to its error lines and the types they are
/// about ("`EventView`: field `priority` has type u16, expected u8"); the full report is
/// logged at DEBUG.
fn summarize_abi_errors(report: &str) -> String {
    tracing::debug!(report, "abi_stable layout report");
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(err) = line.strip_prefix("Error:") {
            let expected = lines.get(i + 2).copied().unwrap_or("");
            let found = lines.get(i + 4).copied().unwrap_or("");
            let before = &lines[..i];
            let field = before
                .iter()
                .rev()
                .find_map(|l| l.strip_prefix("field_name:"));
            let ty = before.iter().rev().find_map(|l| l.strip_prefix("type:"));
            let what = match (field, ty) {
                (Some(f), Some(t)) => format!("field `{f}` ({t})"),
                (None, Some(t)) => t.to_owned(),
                (Some(f), None) => format!("field `{f}`"),
                (None, None) => "a type".to_owned(),
            };
            out.push(format!(
                "{what}: {err} (expected {expected}, found {found})"
            ));
        }
    }
    if out.is_empty() {
        report.lines().take(6).collect::<Vec<_>>().join(" ")
    } else {
        out.dedup();
        out.join("; ")
    }
}

/// abi_stable's version rule, checked before the layout so that a plugin built against
/// an incompatible plugin-api gets the plain "rebuild it" message: same major version,
/// and for 0.x the same minor version.
fn check_version(path: &Path, header: &abi_stable::library::LibHeader) -> Result<(), LoadError> {
    use abi_stable::{library::RootModule, sabi_types::VersionNumber};
    let host = VersionNumber::new(<PluginModRef as RootModule>::VERSION_STRINGS);
    let plugin = VersionNumber::new(header.version_strings());
    let (host, plugin) = match (host, plugin) {
        (Ok(h), Ok(p)) => (h, p),
        (_, Err(e)) | (Err(e), _) => {
            return Err(LoadError::BadMetadata {
                path: path.to_owned(),
                why: format!("its plugin-api version is unreadable: {e}"),
            });
        }
    };
    if host.major != plugin.major || (host.major == 0 && host.minor != plugin.minor) {
        return Err(LoadError::IncompatibleVersion {
            path: path.to_owned(),
            expected: host.to_string(),
            actual: plugin.to_string(),
        });
    }
    Ok(())
}

/// Checks the plugin's root-module layout against the host's.
///
/// abi_stable's own check (`init_root_module`) treats the host as the interface and the
/// plugin as the implementation, so it accepts plugins built against the same or a
/// *newer* patch of plugin-api (extra appended fields) but refuses ones built against an
/// *older* patch (fewer appended fields) — the common case after a host upgrade. The
/// runtime handles both: an appended root-module field the plugin lacks reads as absent
/// (`missing_field(option)`), and an older plugin never calls host methods it does not
/// know. So the host checks in abi_stable's direction first and, failing that, in the
/// other direction; a changed type, reordered field or changed signature fails both.
fn check_root_layout(
    path: &Path,
    header: &abi_stable::library::LibHeader,
) -> Result<(), LoadError> {
    use abi_stable::{StableAbi, abi_stability::abi_checking::check_layout_compatibility};
    let expected = daz_plugin_abi::ABI_VERSION.to_owned();
    let Some(plugin) = header.layout() else {
        return Err(LoadError::AbiMismatch {
            path: path.to_owned(),
            expected,
            detail: "the library carries no layout information to check".to_owned(),
        });
    };
    let host = <PluginModRef as StableAbi>::LAYOUT;
    match check_layout_compatibility(host, plugin) {
        Ok(()) => Ok(()),
        Err(newer) => match check_layout_compatibility(plugin, host) {
            Ok(()) => Ok(()),
            Err(_) => Err(LoadError::AbiMismatch {
                path: path.to_owned(),
                expected,
                detail: summarize_abi_errors(&newer.to_string()),
            }),
        },
    }
}

/// Loads a library file (normally a private copy) in this process, runs abi_stable's
/// checks and copies the metadata out. The mapping is kept forever.
///
/// `watched` is the file the copy came from (for messages and bookkeeping).
pub fn load_library(
    copy: &Path,
    watched: &Path,
    sha256: &str,
    size: u64,
) -> Result<LoadedLibrary, LoadError> {
    let raw = RawLibrary::load_at(copy).map_err(|e| map_library_error(watched, e))?;
    // SAFETY: the header is only used while the library is mapped, and the library is
    // never unmapped (`raw` is leaked below on every path that keeps references).
    let header = match unsafe { lib_header_from_raw_library(&raw) } {
        Ok(h) => h,
        Err(e) => {
            // Nothing from this library was used: closing it is safe.
            drop(raw);
            return Err(map_library_error(watched, e));
        }
    };
    // From here on abi_stable may have cached references into the library (its layout
    // checker does); keep it mapped whatever happens.
    std::mem::forget(raw);
    check_version(watched, header)?;
    check_root_layout(watched, header)?;
    // SAFETY: `check_root_layout` verified the layout (in one direction or the other, see
    // its docs); this still checks the version number.
    let module = unsafe { header.init_root_module_with_unchecked_layout::<PluginModRef>() }
        .map_err(|e| map_library_error(watched, e))?;
    let info = (module.info())();
    let manifest = match module.manifest() {
        Some(f) => {
            let text = f();
            serde_json::from_str::<Manifest>(text.as_str()).map_err(|e| LoadError::BadMetadata {
                path: watched.to_owned(),
                why: format!("its manifest is not valid: {e}"),
            })?
        }
        None => Manifest::default(),
    };
    let meta = PluginMeta {
        name: info.name.as_str().to_owned(),
        version: info.version.as_str().to_owned(),
        api_version: info.api_version.as_str().to_owned(),
        panic_unwind: info.panic_unwind,
        description: info.description.as_str().to_owned(),
        manifest,
    };
    if !meta.panic_unwind {
        return Err(LoadError::BadMetadata {
            path: watched.to_owned(),
            why: format!(
                "plugin {} was built with panic = \"abort\"; its first panic would kill the host. Build it with panic = \"unwind\" (the default)",
                meta.name
            ),
        });
    }
    if !crate::config::valid_plugin_name(&meta.name) {
        return Err(LoadError::BadMetadata {
            path: watched.to_owned(),
            why: format!(
                "plugin name {:?} is not 1-64 of a-z, 0-9, '-', '_'",
                meta.name
            ),
        });
    }
    Ok(LoadedLibrary {
        meta,
        module,
        sha256: sha256.to_owned(),
        size,
        source: watched.to_owned(),
        loaded_at_ms: crate::now_ms(),
        leaked: std::sync::atomic::AtomicBool::new(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_checks_reject_garbage_empty_and_truncated() {
        let p = Path::new("x.so");
        assert!(check_elf(p, b"").unwrap_err().to_string().contains("empty"));
        assert!(
            check_elf(p, b"#!/bin/sh\necho hi\n")
                .unwrap_err()
                .to_string()
                .contains("not an ELF")
        );
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        let half = &me[..me.len() / 2];
        let err = check_elf(p, half).unwrap_err().to_string();
        assert!(
            err.contains("truncated") || err.contains("malformed"),
            "{err}"
        );
    }

    #[test]
    fn trust_refuses_group_writable_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.so");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o664)).unwrap();
        let err = check_trusted(&f).unwrap_err().to_string();
        assert!(
            err.contains("writable by its group") && err.contains("chmod go-w"),
            "{err}"
        );
        fs::set_permissions(&f, fs::Permissions::from_mode(0o646)).unwrap();
        assert!(
            check_trusted(&f)
                .unwrap_err()
                .to_string()
                .contains("others")
        );
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        check_trusted(&f).unwrap();
    }

    #[test]
    fn stable_read_hashes_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.so");
        fs::write(&f, b"abc").unwrap();
        let c = read_trusted(&f, true, Duration::from_millis(1), 3).unwrap();
        assert_eq!(
            c.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches!(
            read_trusted(
                &dir.path().join("nope.so"),
                true,
                Duration::from_millis(1),
                1
            ),
            Err(LoadError::NotFound { .. })
        ));
        assert!(matches!(
            read_trusted(dir.path(), true, Duration::from_millis(1), 1),
            Err(LoadError::NotAFile { .. })
        ));
    }

    #[test]
    fn private_copies_have_unique_names() {
        let dir = tempfile::tempdir().unwrap();
        let c = CandidateFile {
            path: "p.so".into(),
            bytes: b"abc".to_vec(),
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        };
        let a = write_private_copy(dir.path(), "p", &c).unwrap();
        let b = write_private_copy(dir.path(), "p", &c).unwrap();
        assert_ne!(a, b);
        assert_eq!(fs::read(&a).unwrap(), b"abc");
    }
}
