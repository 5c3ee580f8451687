//! The plugin author's side of the boundary, through the built `daz` binary: what
//! `daz check-plugin` says about plugins built with the wrong toolchain pieces.

use daz_testkit::fixture;

/// A plugin built with another abi_stable minor is refused with one line naming both
/// versions and the fix — not abi_stable's two debug dumps of the library header.
#[test]
fn other_abi_stable_minor_is_refused_in_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_daz"))
        .arg("check-plugin")
        .arg(fixture("daz_fixture_other_abi_stable"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got:\n{stderr}");
    assert!(
        lines[0].contains("was built with abi_stable 0.10; this host uses abi_stable 0.11")
            && lines[0].contains("rebuild the plugin with abi_stable 0.11"),
        "{stderr}"
    );
}
