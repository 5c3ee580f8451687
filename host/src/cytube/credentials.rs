//! Passwords for a room, read from an environment variable or a file when the client
//! connects (so rotating a password needs no restart), and held as [`Secret`]s that
//! never print.
//!
//! Invariant: no `Debug`, `Display` or `Serialize` output of anything in this module
//! contains a password; errors name the variable or the file, never the value.

use std::{fmt, path::Path};

use crate::config::RoomConfig;

use super::error::RoomError;

/// A password. Printing it shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one frame that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the bot logs in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No name configured: read-only, never listed, cannot chat.
    Anonymous,
    /// A guest name.
    Guest(String),
    /// An account.
    Account(String, Secret),
}

impl Identity {
    /// The configured name, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::Guest(n) | Identity::Account(n, _) => Some(n),
        }
    }
}

/// Everything secret a connection needs.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Login.
    pub identity: Identity,
    /// Channel password.
    pub channel_password: Option<Secret>,
}

fn read_env(var: &str) -> Result<Secret, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Secret(v)),
        Ok(_) => Err(format!("environment variable {var} is empty")),
        Err(std::env::VarError::NotPresent) => {
            Err(format!("environment variable {var} is not set"))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("environment variable {var} is not valid UTF-8"))
        }
    }
}

fn read_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret(value.to_owned()))
}

fn read(
    room: &str,
    what: &'static str,
    env: Option<&str>,
    file: Option<&Path>,
    setting: &'static str,
) -> Result<Option<Secret>, RoomError> {
    let value = match (env, file) {
        (Some(var), _) => read_env(var).map(Some),
        (None, Some(path)) => read_file(path).map(Some),
        (None, None) => Ok(None),
    };
    value.map_err(|why| RoomError::Credentials {
        room: room.to_owned(),
        what,
        setting,
        why,
    })
}

/// Reads the room's credentials now.
pub fn resolve(cfg: &RoomConfig) -> Result<Credentials, RoomError> {
    let room = cfg.room_name();
    let password = read(
        &room,
        "account password",
        cfg.password_env.as_deref(),
        cfg.password_file.as_deref(),
        "password_env / password_file",
    )?;
    let channel_password = read(
        &room,
        "channel password",
        cfg.channel_password_env.as_deref(),
        cfg.channel_password_file.as_deref(),
        "channel_password_env / channel_password_file",
    )?;
    let identity = match (&cfg.username, password) {
        (None, _) => Identity::Anonymous,
        (Some(name), None) => Identity::Guest(name.clone()),
        (Some(name), Some(pw)) => Identity::Account(name.clone(), pw),
    };
    Ok(Credentials {
        identity,
        channel_password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(extra: &str) -> RoomConfig {
        let text = format!("[[rooms]]\nsite = \"http://127.0.0.1:1\"\nchannel = \"c\"\n{extra}");
        crate::config::Config::parse(&text, Path::new("t.toml"))
            .unwrap()
            .rooms
            .remove(0)
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let id = Identity::Account("bot".into(), s);
        assert!(!format!("{id:?}").contains("hunter2"));
    }

    #[test]
    fn identity_follows_the_configuration() {
        assert_eq!(resolve(&room("")).unwrap().identity, Identity::Anonymous);
        assert_eq!(
            resolve(&room("username = \"g\"")).unwrap().identity,
            Identity::Guest("g".into())
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let cfg = room(&format!(
            "username = \"bot\"\npassword_file = {:?}",
            file.display().to_string()
        ));
        let creds = resolve(&cfg).unwrap();
        assert_eq!(
            creds.identity,
            Identity::Account("bot".into(), Secret::new("s3cret"))
        );
    }

    #[test]
    fn missing_sources_are_named_without_values() {
        let cfg = room("username = \"bot\"\npassword_env = \"DAZ_TEST_SURELY_UNSET_PW\"");
        let err = resolve(&cfg).unwrap_err().to_string();
        assert!(err.contains("DAZ_TEST_SURELY_UNSET_PW is not set"), "{err}");
        assert!(err.contains("password_env"), "{err}");
    }
}
