//! Typed, versioned state hand-off between two versions of a plugin.
//!
//! On a hot reload the host asks the running instance to export its state and gives the
//! bytes to the new version's constructor. The bytes are a small JSON envelope:
//! `{"plugin": name, "version": N, "data": …}`. A plugin declares its state schema with
//! [`StateSchema`]; the new version decodes the previous state with
//! [`SavedState::into_schema`], which migrates an older schema through
//! [`StateSchema::migrate`] or refuses a newer one with a clear error (the host then keeps
//! the old version serving).

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{Error, Result};

/// A plugin's state type, with its schema version.
pub trait StateSchema: Serialize + DeserializeOwned {
    /// The schema version this build writes. Bump it when the shape changes, and teach
    /// [`StateSchema::migrate`] to read the old shape.
    const VERSION: u32;

    /// Builds the state from an older schema version's JSON. The default refuses.
    fn migrate(from_version: u32, data: serde_json::Value) -> Result<Self> {
        let _ = data;
        Err(Error::state(format!(
            "this build reads state schema {} and cannot migrate schema {from_version}; \
             add a migration in StateSchema::migrate",
            Self::VERSION
        )))
    }
}

/// State exported by one version of a plugin, in transit to the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// The plugin that wrote it.
    pub plugin: String,
    /// Its schema version.
    pub version: u32,
    /// The state itself.
    pub data: serde_json::Value,
}

impl SavedState {
    /// Wraps a typed state.
    pub fn from_schema<S: StateSchema>(plugin: &str, state: &S) -> Result<Self> {
        let data = serde_json::to_value(state)
            .map_err(|e| Error::state(format!("cannot encode the state: {e}")))?;
        Ok(Self {
            plugin: plugin.to_owned(),
            version: S::VERSION,
            data,
        })
    }

    /// Decodes into the current schema, migrating an older one.
    pub fn into_schema<S: StateSchema>(self) -> Result<S> {
        match self.version.cmp(&S::VERSION) {
            std::cmp::Ordering::Equal => serde_json::from_value(self.data).map_err(|e| {
                Error::state(format!(
                    "state schema {} from {} does not decode: {e}",
                    self.version, self.plugin
                ))
            }),
            std::cmp::Ordering::Less => S::migrate(self.version, self.data),
            std::cmp::Ordering::Greater => Err(Error::state(format!(
                "state schema {} was written by a newer build of {}; this build only \
                 understands schema {} and refuses to downgrade it",
                self.version,
                self.plugin,
                S::VERSION
            ))),
        }
    }

    /// Encodes for the boundary.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::state(format!("cannot encode the state: {e}")))
    }

    /// Decodes from the boundary.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::state(format!(
                "the previous version handed over state that is not a daz state envelope: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V1 {
        count: u64,
    }
    impl StateSchema for V1 {
        const VERSION: u32 = 1;
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        count: u64,
        label: String,
    }
    impl StateSchema for V2 {
        const VERSION: u32 = 2;
        fn migrate(from: u32, data: serde_json::Value) -> Result<Self> {
            match from {
                1 => {
                    let old: V1 = serde_json::from_value(data)?;
                    Ok(V2 {
                        count: old.count,
                        label: "migrated".into(),
                    })
                }
                v => Err(Error::state(format!("unknown schema {v}"))),
            }
        }
    }

    #[test]
    fn same_version_round_trips() {
        let saved = SavedState::from_schema("p", &V1 { count: 7 }).unwrap();
        let back = SavedState::from_bytes(&saved.to_bytes().unwrap()).unwrap();
        assert_eq!(back.into_schema::<V1>().unwrap(), V1 { count: 7 });
    }

    #[test]
    fn older_version_is_migrated() {
        let saved = SavedState::from_schema("p", &V1 { count: 3 }).unwrap();
        let v2: V2 = saved.into_schema().unwrap();
        assert_eq!(v2.count, 3);
        assert_eq!(v2.label, "migrated");
    }

    #[test]
    fn newer_version_is_refused_with_a_clear_error() {
        let saved = SavedState::from_schema(
            "p",
            &V2 {
                count: 1,
                label: "x".into(),
            },
        )
        .unwrap();
        let err = saved.into_schema::<V1>().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::State);
        assert!(err.message().contains("refuses to downgrade"), "{err}");
    }

    #[test]
    fn default_migration_refuses() {
        let saved = SavedState {
            plugin: "p".into(),
            version: 0,
            data: serde_json::json!({}),
        };
        let err = saved.into_schema::<V1>().unwrap_err();
        assert!(err.message().contains("cannot migrate schema 0"), "{err}");
    }

    #[test]
    fn garbage_bytes_are_refused() {
        let err = SavedState::from_bytes(b"not json").unwrap_err();
        assert!(err.message().contains("not a daz state envelope"));
    }
}
