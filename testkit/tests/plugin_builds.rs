//! The plugin builds tests share: a file a test has deployed is never rewritten under it
//! by another test asking for more plugins.

use daz_testkit::{build_plugins, fixture};

/// Regression: `build_plugins` built the fixtures alone on its first call and again
/// with the feature plugins on a later one; cargo unifies the dependencies' features
/// over what it builds together, so the fixtures were recompiled with other bytes while
/// a test had them deployed (a refused file came back as a new one and was loaded
/// again).
#[test]
fn asking_for_more_plugins_leaves_the_fixtures_as_they_were() {
    let panicky = fixture("daz_fixture_panicky");
    let before = std::fs::read(&panicky).expect("the fixture is built");
    let modified = std::fs::metadata(&panicky).and_then(|m| m.modified()).ok();
    let dir = build_plugins(&["daz-plugin-storage", "daz-plugin-commands"]);
    assert!(dir.join("libdaz_plugin_storage.so").is_file());
    let after = std::fs::read(&panicky).expect("the fixture is still there");
    assert!(
        before == after,
        "{} was rebuilt with other bytes",
        panicky.display()
    );
    assert_eq!(
        modified,
        std::fs::metadata(&panicky).and_then(|m| m.modified()).ok(),
        "{} was written again",
        panicky.display()
    );
}
