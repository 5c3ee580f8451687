//! Declared dependencies between plugins: a plugin's manifest lists the plugins it
//! `requires` (by plugin name, e.g. `["storage"]`), and the host starts plugins in an
//! order where every plugin comes after what it requires, and stops them in the reverse
//! order. A requirement that no enabled table provides, or plugins that require each
//! other in a circle, are reported as errors for the plugins concerned (never a hang);
//! the rest start.

use std::collections::{BTreeMap, BTreeSet};

use super::ReloadError;

/// One enabled plugin table.
#[derive(Debug, Clone)]
pub struct Node {
    /// The table name (`[plugins.<table>]`).
    pub table: String,
    /// The plugin the table runs (its `Plugin::NAME`).
    pub plugin: String,
    /// The plugin names it requires (empty when unknown: its file did not load).
    pub requires: Vec<String>,
}

/// A start order and the tables that cannot start.
#[derive(Debug, Default)]
pub struct Order {
    /// Every table, each after the tables it requires (tables in a cycle last).
    pub order: Vec<String>,
    /// Tables that must not start, and why.
    pub errors: BTreeMap<String, ReloadError>,
}

/// Orders `nodes` so that every table comes after the tables providing what it requires
/// (Kahn's algorithm; ties keep the order of `nodes`).
pub fn order(nodes: &[Node]) -> Order {
    let mut out = Order::default();
    // Table → the tables it waits for.
    let mut waits: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for n in nodes {
        let mut deps = BTreeSet::new();
        for req in &n.requires {
            let providers: Vec<&str> = nodes
                .iter()
                .filter(|p| p.table != n.table && (p.plugin == *req || p.table == *req))
                .map(|p| p.table.as_str())
                .collect();
            if providers.is_empty() {
                out.errors.entry(n.table.clone()).or_insert_with(|| {
                    ReloadError::MissingRequirement {
                        plugin: n.table.clone(),
                        requires: req.clone(),
                    }
                });
            }
            deps.extend(providers);
        }
        waits.insert(&n.table, deps);
    }
    let mut done: BTreeSet<&str> = BTreeSet::new();
    loop {
        let ready: Vec<&str> = nodes
            .iter()
            .map(|n| n.table.as_str())
            .filter(|t| !done.contains(t) && waits[t].iter().all(|d| done.contains(d)))
            .collect();
        if ready.is_empty() {
            break;
        }
        for t in ready {
            done.insert(t);
            out.order.push(t.to_owned());
        }
    }
    let stuck: Vec<&str> = nodes
        .iter()
        .map(|n| n.table.as_str())
        .filter(|t| !done.contains(t))
        .collect();
    for t in &stuck {
        out.errors.insert(
            (*t).to_owned(),
            ReloadError::DependencyCycle {
                plugin: (*t).to_owned(),
                cycle: stuck.join(", "),
            },
        );
        out.order.push((*t).to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(table: &str, requires: &[&str]) -> Node {
        Node {
            table: table.to_owned(),
            plugin: table.to_owned(),
            requires: requires.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn required_plugins_start_first() {
        let o = order(&[
            node("analytics", &["storage"]),
            node("commands", &[]),
            node("storage", &[]),
            node("usertracker", &["storage", "commands"]),
        ]);
        assert!(o.errors.is_empty(), "{:?}", o.errors);
        assert_eq!(o.order, ["commands", "storage", "analytics", "usertracker"]);
    }

    #[test]
    fn a_renamed_table_provides_its_plugin() {
        let mut db = node("db", &[]);
        db.plugin = "storage".to_owned();
        let o = order(&[node("analytics", &["storage"]), db]);
        assert_eq!(o.order, ["db", "analytics"]);
    }

    #[test]
    fn a_missing_requirement_is_an_error_for_that_plugin_only() {
        let o = order(&[node("analytics", &["storage"]), node("example", &[])]);
        assert_eq!(o.order, ["analytics", "example"]);
        let e = o.errors["analytics"].to_string();
        assert!(e.contains("requires plugin \"storage\""), "{e}");
        assert!(!o.errors.contains_key("example"));
    }

    #[test]
    fn a_cycle_is_an_error_not_a_hang() {
        let o = order(&[node("a", &["b"]), node("b", &["a"]), node("c", &[])]);
        assert_eq!(o.order, ["c", "a", "b"]);
        assert!(
            o.errors["a"]
                .to_string()
                .contains("dependency cycle (a, b)")
        );
        assert!(o.errors.contains_key("b"));
    }
}
