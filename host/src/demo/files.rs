//! Where the demo's plugin libraries come from: a directory given on the command line,
//! or the directory of the running `daz` (`target/release/daz` →
//! `target/release/lib*.so`), building the missing ones with cargo when this executable
//! was built from a source tree that is still there (the first
//! `cargo run --release -p daz-host -- demo`).

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::plan::Plan;

/// The `cargo build` line that builds every plugin of the plan.
pub fn build_command(plan: &Plan) -> String {
    let packages: Vec<String> = plan
        .plugins
        .iter()
        .map(|p| format!("-p {}", p.package))
        .collect();
    format!("cargo build --release {}", packages.join(" "))
}

/// The plan's plugins missing from `dir`, as `(name, file)`.
fn missing(plan: &Plan, dir: &Path) -> Vec<(String, String)> {
    plan.plugins
        .iter()
        .filter(|p| !dir.join(p.file()).is_file())
        .map(|p| (p.package.clone(), p.file()))
        .collect()
}

/// The directory holding every plugin of the plan. `given` (`daz demo --plugin-dir`)
/// must hold them all; without it, the running executable's directory is used and the
/// missing plugins are built there when the source tree allows, otherwise the error
/// says how to build them.
pub fn plugin_dir(
    plan: &Plan,
    given: Option<PathBuf>,
    say: &dyn Fn(&str),
) -> anyhow::Result<PathBuf> {
    if let Some(dir) = given {
        let gone = missing(plan, &dir);
        anyhow::ensure!(
            gone.is_empty(),
            "{} lacks {} — build the demo's plugins with `{}` and pass that target directory",
            dir.display(),
            gone.iter()
                .map(|(_, f)| f.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            build_command(plan)
        );
        return Ok(dir);
    }
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let dir = exe
        .parent()
        .context("the running executable has no directory")?
        .to_owned();
    let gone = missing(plan, &dir);
    if gone.is_empty() {
        return Ok(dir);
    }
    let how = format!(
        "the demo's plugins {} are not next to {} — build them first: `{}` \
         (or pass --plugin-dir DIR)",
        gone.iter()
            .map(|(_, f)| f.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        exe.display(),
        build_command(plan)
    );
    // target/<profile>/daz with the workspace it was built from.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let (Some(target), true) = (
        dir.parent(),
        matches!(profile, "release" | "debug") && workspace.join("Cargo.toml").is_file(),
    ) else {
        anyhow::bail!(how);
    };
    say(&format!(
        "[setup]  building the demo's plugins (first run only): {}…",
        gone.iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(&workspace).args(["build", "--quiet"]);
    for (package, _) in &gone {
        cmd.args(["-p", package]);
    }
    cmd.arg("--target-dir").arg(target);
    if profile == "release" {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run cargo; {how}"))?;
    if !status.success() || !missing(plan, &dir).is_empty() {
        anyhow::bail!("building the demo's plugins failed; {how}");
    }
    Ok(dir)
}
