//! Why a room's connection ended or never started: [`RoomError`], one variant per cause
//! an operator or the reconnect logic branches on, and what the reconnect logic does with
//! each ([`Recovery`]).
//!
//! Every message says what failed, why, and what to do. None of them carries a password:
//! credentials are read into [`super::credentials::Secret`]s, which never print.

use std::time::Duration;

use serde::Serialize;

/// How a `login` was refused (the server's error text, classified).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginFailure {
    /// "Invalid username/password combination".
    WrongPassword,
    /// "That name is already in use on this channel."
    NameInUse,
    /// "Guest logins are restricted to one per IP address per 60 seconds."
    GuestLimit,
    /// "That username is registered." (a guest login with an account's name).
    NameRegistered,
    /// "Invalid username. …".
    InvalidName,
    /// "That username is reserved."
    ReservedName,
    /// Anything else.
    Other,
}

impl LoginFailure {
    /// Classifies the `error` of a `login {success:false, error}` reply.
    pub fn classify(error: &str) -> Self {
        let e = error.to_ascii_lowercase();
        if e.contains("password") {
            LoginFailure::WrongPassword
        } else if e.contains("already in use") {
            LoginFailure::NameInUse
        } else if e.contains("guest logins are restricted") {
            LoginFailure::GuestLimit
        } else if e.contains("is registered") {
            LoginFailure::NameRegistered
        } else if e.contains("reserved") {
            LoginFailure::ReservedName
        } else if e.contains("invalid username") {
            LoginFailure::InvalidName
        } else {
            LoginFailure::Other
        }
    }

    fn advice(self) -> &'static str {
        match self {
            LoginFailure::WrongPassword => {
                "check the password the room's password_env / password_file holds"
            }
            LoginFailure::NameInUse => {
                "another user has that name in the channel; the bot retries with backoff"
            }
            LoginFailure::GuestLimit => {
                "the server allows one guest login per IP per 60 s; the bot retries after that"
            }
            LoginFailure::NameRegistered => {
                "that name belongs to an account: configure its password, or pick another guest name"
            }
            LoginFailure::InvalidName => "use 1-20 of A-Z, a-z, 0-9, '-' and '_'",
            LoginFailure::ReservedName => "pick another name",
            LoginFailure::Other => "see the server's message",
        }
    }
}

/// Why a room is not (or no longer) connected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RoomError {
    /// The password (or channel password) could not be read.
    #[error(
        "cannot read the {what} for room {room}: {why}; fix the room's {setting} in plugins.toml"
    )]
    Credentials {
        /// The room.
        room: String,
        /// "account password" / "channel password".
        what: &'static str,
        /// The config key to fix.
        setting: &'static str,
        /// Why (no secret in it).
        why: String,
    },
    /// `/socketconfig/<channel>.json` answered 404.
    #[error(
        "the site {site} has no channel {channel:?} (socketconfig answered 404: {message}); check `site` and `channel`"
    )]
    UnknownChannel {
        /// The site asked.
        site: String,
        /// The channel.
        channel: String,
        /// The server's message.
        message: String,
    },
    /// Discovery failed for another reason.
    #[error(
        "cannot discover the socket server from {url}: {why}; is `site` right and the server up?"
    )]
    Discovery {
        /// The URL asked.
        url: String,
        /// What went wrong.
        why: String,
    },
    /// The websocket could not be opened.
    #[error("cannot open the websocket {url}: {why}; the bot retries with backoff")]
    Connect {
        /// The websocket URL.
        url: String,
        /// What went wrong.
        why: String,
    },
    /// The server refused the Socket.IO connect because of its per-IP connect budget.
    #[error(
        "the server refused the connect: rate limit exceeded (5 connects, then 1 per 10 s per IP); the bot waits for the budget to refill"
    )]
    RateLimited,
    /// The server refused the Socket.IO connect for another reason.
    #[error("the server refused the Socket.IO connect: {message}")]
    ConnectRefused {
        /// Its message.
        message: String,
    },
    /// A step of the handshake did not complete in time.
    #[error("timed out after {after:?} waiting for {stage}; the bot reconnects")]
    Timeout {
        /// What was awaited.
        stage: &'static str,
        /// How long.
        after: Duration,
    },
    /// The server stopped pinging.
    #[error(
        "no ping from the server for {silent:?} (pingInterval + pingTimeout); the connection is dead, the bot reconnects"
    )]
    Dead {
        /// How long it was silent.
        silent: Duration,
    },
    /// The server broke the protocol (bad open packet, oversized frame, …).
    #[error("protocol error: {why}; the bot reconnects")]
    Protocol {
        /// What was wrong.
        why: String,
    },
    /// The connection closed.
    #[error("the connection closed ({how}); the bot reconnects")]
    Closed {
        /// How (server disconnect, close frame, transport error).
        how: String,
    },
    /// `login` was refused.
    #[error("login as {name:?} refused: {message} ({advice})", advice = .kind.advice())]
    LoginFailed {
        /// The name tried.
        name: String,
        /// The classification.
        kind: LoginFailure,
        /// The server's text.
        message: String,
    },
    /// The channel wants a password and none is configured.
    #[error(
        "channel {channel:?} is password-protected; set channel_password_env or channel_password_file for this room"
    )]
    ChannelPasswordRequired {
        /// The channel.
        channel: String,
    },
    /// The configured channel password was refused.
    #[error(
        "channel {channel:?} refused the configured channel password; fix channel_password_env / channel_password_file"
    )]
    WrongChannelPassword {
        /// The channel.
        channel: String,
    },
    /// The server refused the channel name.
    #[error("the server refused channel {channel:?}: {message}; fix `channel`")]
    InvalidChannel {
        /// The channel.
        channel: String,
        /// The server's message.
        message: String,
    },
    /// Another client logged in with the bot's name and the server kicked the bot.
    #[error(
        "kicked: another client logged in as {name:?} (\"Duplicate login\"); is a second bot running with this account?"
    )]
    DuplicateLogin {
        /// The bot's name.
        name: String,
    },
    /// The bot is banned.
    #[error("banned from the channel: {reason:?}; ask a moderator to lift the ban")]
    Banned {
        /// The kick reason.
        reason: String,
    },
    /// Kicked for another reason.
    #[error("kicked: {reason:?}; the bot reconnects")]
    Kicked {
        /// The kick reason.
        reason: String,
    },
}

/// What the reconnect logic does after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Reconnect with the usual backoff.
    Retry,
    /// Reconnect, but not before this long.
    RetryAfter(Duration),
    /// Only a configuration change (or an operator) can fix it: stay down.
    Permanent,
    /// Decided by the room's `on_duplicate_login` policy.
    DuplicateLoginPolicy,
    /// Decided by the room's `on_ban` policy.
    BanPolicy,
}

impl RoomError {
    /// Classifies a `kick {reason}`.
    pub fn from_kick(reason: &str, name: Option<&str>, channel: &str) -> Self {
        let lower = reason.to_ascii_lowercase();
        if lower.contains("duplicate login") {
            RoomError::DuplicateLogin {
                name: name.unwrap_or_default().to_owned(),
            }
        } else if lower.contains("banned") {
            RoomError::Banned {
                reason: reason.to_owned(),
            }
        } else if lower.contains("invalid channel") {
            RoomError::InvalidChannel {
                channel: channel.to_owned(),
                message: reason.to_owned(),
            }
        } else {
            RoomError::Kicked {
                reason: reason.to_owned(),
            }
        }
    }

    /// What to do next.
    pub fn recovery(&self) -> Recovery {
        match self {
            RoomError::Credentials { .. }
            | RoomError::UnknownChannel { .. }
            | RoomError::ChannelPasswordRequired { .. }
            | RoomError::WrongChannelPassword { .. }
            | RoomError::InvalidChannel { .. } => Recovery::Permanent,
            RoomError::LoginFailed { kind, .. } => match kind {
                LoginFailure::NameInUse | LoginFailure::Other => Recovery::Retry,
                LoginFailure::GuestLimit => Recovery::RetryAfter(Duration::from_secs(61)),
                LoginFailure::WrongPassword
                | LoginFailure::NameRegistered
                | LoginFailure::InvalidName
                | LoginFailure::ReservedName => Recovery::Permanent,
            },
            RoomError::DuplicateLogin { .. } => Recovery::DuplicateLoginPolicy,
            RoomError::Banned { .. } => Recovery::BanPolicy,
            RoomError::Discovery { .. }
            | RoomError::Connect { .. }
            | RoomError::RateLimited
            | RoomError::ConnectRefused { .. }
            | RoomError::Timeout { .. }
            | RoomError::Dead { .. }
            | RoomError::Protocol { .. }
            | RoomError::Closed { .. }
            | RoomError::Kicked { .. } => Recovery::Retry,
        }
    }

    /// A short stable name for metrics labels and event payloads.
    pub fn kind(&self) -> &'static str {
        match self {
            RoomError::Credentials { .. } => "credentials",
            RoomError::UnknownChannel { .. } => "unknown_channel",
            RoomError::Discovery { .. } => "discovery",
            RoomError::Connect { .. } => "connect",
            RoomError::RateLimited => "rate_limited",
            RoomError::ConnectRefused { .. } => "connect_refused",
            RoomError::Timeout { .. } => "timeout",
            RoomError::Dead { .. } => "dead",
            RoomError::Protocol { .. } => "protocol",
            RoomError::Closed { .. } => "closed",
            RoomError::LoginFailed { kind, .. } => match kind {
                LoginFailure::WrongPassword => "login_wrong_password",
                LoginFailure::NameInUse => "login_name_in_use",
                LoginFailure::GuestLimit => "login_guest_limit",
                LoginFailure::NameRegistered => "login_name_registered",
                LoginFailure::InvalidName => "login_invalid_name",
                LoginFailure::ReservedName => "login_reserved_name",
                LoginFailure::Other => "login_failed",
            },
            RoomError::ChannelPasswordRequired { .. } => "channel_password_required",
            RoomError::WrongChannelPassword { .. } => "wrong_channel_password",
            RoomError::InvalidChannel { .. } => "invalid_channel",
            RoomError::DuplicateLogin { .. } => "duplicate_login",
            RoomError::Banned { .. } => "banned",
            RoomError::Kicked { .. } => "kicked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_errors_from_the_captures_are_classified() {
        let cases = [
            (
                "Invalid username/password combination",
                LoginFailure::WrongPassword,
            ),
            (
                "That name is already in use on this channel.",
                LoginFailure::NameInUse,
            ),
            (
                "Guest logins are restricted to one per IP address per 60 seconds.",
                LoginFailure::GuestLimit,
            ),
            ("That username is registered.", LoginFailure::NameRegistered),
            (
                "Invalid username.  Usernames must be 1-20 characters long and consist only of characters a-z, A-Z, 0-9, -, or _.",
                LoginFailure::InvalidName,
            ),
            ("That username is reserved.", LoginFailure::ReservedName),
            ("Something new", LoginFailure::Other),
        ];
        for (text, kind) in cases {
            assert_eq!(LoginFailure::classify(text), kind, "{text}");
        }
    }

    #[test]
    fn kicks_are_classified_and_policies_apply() {
        let dup = RoomError::from_kick("Duplicate login", Some("bot"), "c");
        assert_eq!(dup.recovery(), Recovery::DuplicateLoginPolicy);
        assert_eq!(dup.kind(), "duplicate_login");
        let ban = RoomError::from_kick("You're banned!", Some("bot"), "c");
        assert_eq!(ban.recovery(), Recovery::BanPolicy);
        let chan = RoomError::from_kick("Invalid channel name", None, "c");
        assert_eq!(chan.recovery(), Recovery::Permanent);
        let other = RoomError::from_kick("bye bye", None, "c");
        assert_eq!(other.recovery(), Recovery::Retry);
        assert!(other.to_string().contains("bye bye"));
    }

    #[test]
    fn guest_limit_waits_out_the_server_window() {
        let e = RoomError::LoginFailed {
            name: "g".into(),
            kind: LoginFailure::GuestLimit,
            message: "x".into(),
        };
        assert!(matches!(e.recovery(), Recovery::RetryAfter(d) if d >= Duration::from_secs(60)));
        assert!(e.to_string().contains("60 s"), "{e}");
    }
}
