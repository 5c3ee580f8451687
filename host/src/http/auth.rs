//! The admin API's bearer token: where it comes from (`[http] token_env` /
//! `token_file`), the rule that a host listening beyond loopback must have one, and the
//! check on every `/api/*` request (constant-time, never logged, never echoed).

use std::{fmt, net::SocketAddr, path::Path, sync::Arc};

use axum::{
    Json,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::HttpConfig;

/// Tokens shorter than this are refused: a short token can be guessed over the network.
pub const MIN_TOKEN_LEN: usize = 16;

/// The admin token. `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct AdminToken {
    /// SHA-256 of the token: requests are compared digest to digest, so neither the
    /// comparison time nor the length of what is compared says anything about it.
    digest: Arc<[u8; 32]>,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

impl AdminToken {
    /// A token from its text.
    pub fn new(token: &str) -> AdminToken {
        AdminToken {
            digest: Arc::new(Sha256::digest(token.as_bytes()).into()),
        }
    }

    /// Whether `candidate` is the token, in time independent of both.
    pub fn matches(&self, candidate: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        bool::from(d.ct_eq(&*self.digest))
    }
}

/// Why the admin token cannot be used. Messages name the key and the fix, never the
/// token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// `token_file` cannot be read.
    #[error(
        "[http] token_file: cannot read {path}: {why}; write the admin token into it (chmod 600) or remove the key"
    )]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// `token_file` may be changed by other users.
    #[error(
        "[http] token_file: {path} is writable by group or others, so anyone could replace the admin token; chmod 600 it"
    )]
    Writable {
        /// The file.
        path: String,
    },
    /// `token_env` names a variable that is not set.
    #[error(
        "[http] token_env: the environment variable {name} is not set (or empty); export it with the admin token, or remove the key"
    )]
    EnvMissing {
        /// The variable.
        name: String,
    },
    /// The token is too short.
    #[error(
        "the admin token from {from} is {len} characters; use at least {MIN_TOKEN_LEN} (for example `openssl rand -hex 32`)"
    )]
    TooShort {
        /// Where it came from.
        from: String,
        /// Its length.
        len: usize,
    },
    /// Listening beyond loopback with no token.
    #[error(
        "[http] listen = \"{listen}\" is not a loopback address and no admin token is configured: set {env} (or [http] token_env / token_file), or listen on 127.0.0.1"
    )]
    OpenBeyondLoopback {
        /// The address.
        listen: SocketAddr,
        /// The variable looked at.
        env: String,
    },
}

/// The admin token `http` configures, if any, with `env` giving the environment
/// (`std::env::var` in the host). Refuses a non-loopback `listen` without a token.
pub fn resolve(
    http: &HttpConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<AdminToken>, TokenError> {
    let (token, from) = if let Some(path) = &http.token_file {
        (Some(read_token_file(path)?), path.display().to_string())
    } else {
        let name = http.token_env_name();
        match env(name).filter(|v| !v.trim().is_empty()) {
            Some(v) => (Some(v.trim().to_owned()), format!("${name}")),
            None if http.token_env.is_some() => {
                return Err(TokenError::EnvMissing {
                    name: crate::config::shown_env_name("token_env", name),
                });
            }
            None => (None, String::new()),
        }
    };
    match token {
        Some(t) if t.chars().count() < MIN_TOKEN_LEN => Err(TokenError::TooShort {
            from,
            len: t.chars().count(),
        }),
        Some(t) => Ok(Some(AdminToken::new(&t))),
        None if !http.listen.ip().is_loopback() => Err(TokenError::OpenBeyondLoopback {
            listen: http.listen,
            env: http.token_env_name().to_owned(),
        }),
        None => Ok(None),
    }
}

/// Reads a token file: trailing whitespace (the newline) is not part of the token.
pub fn read_token_file(path: &Path) -> Result<String, TokenError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| TokenError::Unreadable {
        path: shown.clone(),
        why: e.to_string(),
    })?;
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(TokenError::Writable { path: shown });
    }
    let text = std::fs::read_to_string(path).map_err(|e| TokenError::Unreadable {
        path: shown.clone(),
        why: e.to_string(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Unreadable {
            path: shown,
            why: "the file is empty".to_owned(),
        });
    }
    Ok(token.to_owned())
}

/// What the auth layer needs.
#[derive(Clone)]
pub struct AuthState {
    /// The token; `None` leaves the API open (loopback only, see [`resolve`]).
    pub token: Option<AdminToken>,
    /// Refusals not yet logged (see [`RefusalLog`]).
    pub refusals: Arc<RefusalLog>,
}

impl AuthState {
    /// The auth layer's state for `token`.
    pub fn new(token: Option<AdminToken>) -> AuthState {
        AuthState {
            token,
            refusals: Arc::new(RefusalLog::default()),
        }
    }
}

/// Refused requests are logged at most once per [`RefusalLog::EVERY`], with how many
/// were refused since the last line: someone hammering the API with wrong tokens must
/// not flood the log (every refusal is still answered 401 at once).
#[derive(Default)]
pub struct RefusalLog {
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl RefusalLog {
    /// Least time between two log lines.
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// Counts a refusal; returns how many to report when a line is due now.
    fn count(&self) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.1 += 1;
        let due = st.0.is_none_or(|at| at.elapsed() >= Self::EVERY);
        if !due {
            return None;
        }
        let n = st.1;
        *st = (Some(std::time::Instant::now()), 0);
        Some(n)
    }
}

/// The path that also takes the token as `?token=` (EventSource cannot set headers).
pub const QUERY_TOKEN_PATH: &str = "/api/events/stream";

fn query_token(req: &Request) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "token").then(|| {
            url::form_urlencoded::parse(format!("t={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
    })
}

/// Middleware: lets a request through when no token is configured or it carries the
/// token; otherwise 401 with a JSON error.
pub async fn require_token(State(auth): State<AuthState>, req: Request, next: Next) -> Response {
    let Some(token) = &auth.token else {
        return next.run(req).await;
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let presented = bearer.or_else(|| {
        if req.uri().path() == QUERY_TOKEN_PATH {
            query_token(&req)
        } else {
            None
        }
    });
    match presented {
        Some(t) if token.matches(&t) => next.run(req).await,
        presented => {
            let why = if presented.is_some() {
                "wrong admin token"
            } else {
                "missing admin token"
            };
            if let Some(refused) = auth.refusals.count() {
                tracing::warn!(
                    path = %req.uri().path(),
                    method = %req.method(),
                    refused,
                    "admin API request refused: {why} ({refused} refused since the last such line, at most one line per {}s)",
                    RefusalLog::EVERY.as_secs()
                );
            }
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(serde_json::json!({
                    "error": format!("{why}: send `Authorization: Bearer <token>` with the token the host reads from [http] token_env / token_file")
                })),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn refusals_are_logged_once_per_interval_with_their_count() {
        let log = super::RefusalLog::default();
        assert_eq!(log.count(), Some(1), "the first refusal is logged");
        assert_eq!(log.count(), None);
        assert_eq!(log.count(), None);
        // The next line is due once the interval has passed: it reports both held back
        // and the current one.
        log.state.lock().unwrap().0 = Some(std::time::Instant::now() - super::RefusalLog::EVERY);
        assert_eq!(log.count(), Some(3));
        assert_eq!(log.count(), None);
    }

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn http(extra: &str) -> HttpConfig {
        crate::config::Config::parse(&format!("[http]\n{extra}"), Path::new("plugins.toml"))
            .unwrap()
            .http
    }

    #[test]
    fn tokens_compare_by_value_only() {
        let t = AdminToken::new("0123456789abcdef");
        assert!(t.matches("0123456789abcdef"));
        assert!(!t.matches("0123456789abcdeF"));
        assert!(!t.matches(""));
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[test]
    fn loopback_without_a_token_is_open_beyond_it_refused() {
        assert!(resolve(&http(""), |_| None).unwrap().is_none());
        let err = resolve(&http("listen = \"0.0.0.0:9464\""), |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("0.0.0.0:9464")
                && err.contains("DAZ_ADMIN_TOKEN")
                && err.contains("token_file"),
            "{err}"
        );
        let t = resolve(&http("listen = \"[::]:0\""), |n| {
            (n == "DAZ_ADMIN_TOKEN").then(|| "a-long-enough-token\n".to_owned())
        })
        .unwrap()
        .unwrap();
        assert!(t.matches("a-long-enough-token"));
    }

    #[test]
    fn a_named_variable_must_be_set_and_tokens_long() {
        let err = resolve(&http("token_env = \"MY_TOKEN\""), |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("MY_TOKEN is not set"), "{err}");
        let err = resolve(&http(""), |_| Some("short-secret".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at least 16") && !err.contains("short-secret"),
            "{err}"
        );
    }

    #[test]
    fn token_files_are_read_trimmed_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "file-token-0123456789\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = HttpConfig {
            token_file: Some(path.clone()),
            ..HttpConfig::default()
        };
        let t = resolve(&cfg, |_| None).unwrap().unwrap();
        assert!(t.matches("file-token-0123456789"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = resolve(&cfg, |_| None).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        let cfg = HttpConfig {
            token_file: Some(dir.path().join("missing")),
            ..HttpConfig::default()
        };
        let err = resolve(&cfg, |_| None).unwrap_err().to_string();
        assert!(err.contains("[http] token_file: cannot read"), "{err}");
    }
}
