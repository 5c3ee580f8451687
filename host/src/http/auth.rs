//! Who may use the admin API, decided on every request (the model is Jupyter's and
//! Grafana's for a local admin page: "loopback" is not "trusted", because any web page
//! in the operator's browser can reach it):
//!
//! * the token: configured (`[http] token_env` / `token_file`, `$DAZ_ADMIN_TOKEN`) or,
//!   by default, generated on first start into `<runtime_dir>/admin-token` (created with
//!   `O_CREAT|O_EXCL`, mode 0600, so nobody can plant or read it), where the CLI finds
//!   it. Compared in constant time, never logged, never echoed. `[http] open = true`
//!   turns it off on loopback, with a warning;
//! * the status page's session: the host prints a one-time login URL at start
//!   (`http://127.0.0.1:9464/?login=<code>`); opening it sets an `HttpOnly`,
//!   `SameSite=Strict` session cookie and the code is spent;
//! * `Host` must name an address the server listens on (an IP literal, `localhost` on
//!   loopback, or `[http] allowed_hosts`): a DNS-rebinding page sends its own name;
//! * `/api/*` refuses cross-origin requests (`Origin` not this origin, `Sec-Fetch-Site`
//!   not `same-origin`/`none`), and state-changing requests refuse the content types a
//!   form or a no-CORS `fetch` can send (urlencoded, multipart, text/plain).

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
    /// The generated token's file exists but is not a private file of this user.
    #[error(
        "{path}: the admin token file must be a regular file of this user, readable by nobody else, holding the token; delete it (the host generates a new one) or chmod 600 it"
    )]
    NotPrivate {
        /// The file.
        path: String,
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

/// Where the admin token comes from.
#[derive(Debug)]
pub enum TokenSetting {
    /// Configured: `[http] token_file`, `token_env` or `$DAZ_ADMIN_TOKEN`.
    Configured(AdminToken),
    /// None configured: the host generates one in this file (or reuses it).
    Generated(std::path::PathBuf),
    /// `[http] open = true`: no token (loopback only).
    Open,
}

/// The file the generated token lives in.
pub fn generated_token_path(runtime_dir: &Path) -> std::path::PathBuf {
    runtime_dir.join(GENERATED_TOKEN_FILE)
}

/// The name of the generated token's file in the runtime directory.
pub const GENERATED_TOKEN_FILE: &str = "admin-token";

/// How `http` wants the admin API guarded, with `env` giving the environment
/// (`std::env::var` in the host). Nothing is created here (`config check` calls it);
/// the host calls [`load_or_create`] for [`TokenSetting::Generated`]. Refuses a
/// non-loopback `listen` without a configured token, and `open` beyond loopback.
pub fn resolve(
    http: &HttpConfig,
    runtime_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<TokenSetting, TokenError> {
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
        Some(t) => Ok(TokenSetting::Configured(AdminToken::new(&t))),
        None if !http.listen.ip().is_loopback() => Err(TokenError::OpenBeyondLoopback {
            listen: http.listen,
            env: http.token_env_name().to_owned(),
        }),
        None if http.open => Ok(TokenSetting::Open),
        None => Ok(TokenSetting::Generated(generated_token_path(runtime_dir))),
    }
}

/// Reads the generated token from `path`, or creates it: a new file (`O_CREAT|O_EXCL`,
/// never following a symlink) with mode 0600 from the start, holding 32 random bytes in
/// hex. An existing file must be a private regular file of this user (else: refused,
/// with the fix). The directory is created (mode 0700) when missing.
pub fn load_or_create(path: &Path) -> Result<String, TokenError> {
    use std::{
        io::Write,
        os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    };
    let shown = path.display().to_string();
    let unreadable = |why: String| TokenError::Unreadable {
        path: shown.clone(),
        why,
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| unreadable(format!("cannot create its directory: {e}")))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| unreadable(format!("cannot restrict its directory: {e}")))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(mut f) => {
            let token = hex::encode(rand::random::<[u8; 32]>());
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| unreadable(format!("cannot write it: {e}")))?;
            tracing::info!(file = %shown, "generated the admin API token (the CLI reads it from this file)");
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| unreadable(e.to_string()))?;
            let md = f.metadata().map_err(|e| unreadable(e.to_string()))?;
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            if !md.is_file() || md.uid() != me || md.mode() & 0o077 != 0 {
                return Err(TokenError::NotPrivate { path: shown });
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::Read::take(f, 4096), &mut text)
                .map_err(|e| unreadable(e.to_string()))?;
            let token = text.trim();
            if token.chars().count() < MIN_TOKEN_LEN {
                return Err(TokenError::NotPrivate { path: shown });
            }
            Ok(token.to_owned())
        }
        Err(e) => Err(unreadable(format!("cannot create it: {e}"))),
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

/// The session cookie the one-time login URL sets.
pub const SESSION_COOKIE: &str = "daz_session";
/// Sessions kept at once (each browser that opened a login URL holds one); the oldest
/// is forgotten first.
const MAX_SESSIONS: usize = 64;
/// One-time login codes not yet used, kept at once; the oldest is forgotten first.
const MAX_LOGIN_CODES: usize = 8;

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The access rules of one HTTP server: the token, the status page's sessions and
/// login codes, and the `Host` names it answers to.
pub struct Access {
    /// The token; `None` only with `[http] open = true` (loopback).
    token: Option<AdminToken>,
    /// Digests of live session ids (newest last). In memory only: a restart logs every
    /// browser out, and the new start prints a new login URL.
    sessions: std::sync::Mutex<std::collections::VecDeque<[u8; 32]>>,
    /// Digests of one-time login codes not yet spent (newest last).
    logins: std::sync::Mutex<std::collections::VecDeque<[u8; 32]>>,
    /// The address the server is bound to (set once it is).
    bound: std::sync::OnceLock<SocketAddr>,
    /// Names besides IP literals and `localhost` that `Host` may carry.
    allowed_hosts: Vec<String>,
    /// Refusals not yet logged.
    refusals: RefusalLog,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token)
            .field("bound", &self.bound.get())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Access {
    /// The rules for `token` (`None`: open) and `allowed_hosts`.
    pub fn new(token: Option<AdminToken>, allowed_hosts: &[String]) -> Arc<Access> {
        Arc::new(Access {
            token,
            sessions: Default::default(),
            logins: Default::default(),
            bound: std::sync::OnceLock::new(),
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            refusals: RefusalLog::default(),
        })
    }

    /// Records the address the server listens on (the first call wins).
    pub fn bind(&self, addr: SocketAddr) {
        let _ = self.bound.set(addr);
    }

    /// Whether requests need a token or session.
    pub fn is_open(&self) -> bool {
        self.token.is_none()
    }

    /// A new one-time login URL for the status page (`None` when the API is open or the
    /// server is not bound yet). The code is good for one use.
    pub fn login_url(&self) -> Option<String> {
        self.token.as_ref()?;
        let addr = *self.bound.get()?;
        let code = hex::encode(rand::random::<[u8; 24]>());
        let mut logins = lock(&self.logins);
        logins.push_back(digest(&code));
        while logins.len() > MAX_LOGIN_CODES {
            logins.pop_front();
        }
        let shown = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], addr.port()))
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
            }
            _ => addr,
        };
        Some(format!("http://{shown}/?login={code}"))
    }

    /// Spends a login code; returns a new session id when it was valid.
    fn redeem(&self, code: &str) -> Option<String> {
        let d = digest(code);
        {
            let mut logins = lock(&self.logins);
            let i = logins.iter().position(|c| bool::from(c.ct_eq(&d)))?;
            logins.remove(i);
        }
        let id = hex::encode(rand::random::<[u8; 32]>());
        let mut sessions = lock(&self.sessions);
        sessions.push_back(digest(&id));
        while sessions.len() > MAX_SESSIONS {
            sessions.pop_front();
        }
        Some(id)
    }

    fn session_ok(&self, id: &str) -> bool {
        let d = digest(id);
        lock(&self.sessions)
            .iter()
            .fold(false, |found, s| found | bool::from(s.ct_eq(&d)))
    }

    /// Whether a `Host` header names this server: an IP literal equal to the bound
    /// address (any IP when bound to a wildcard), `localhost` when bound to loopback or a
    /// wildcard, or an allowed name; with the bound port (or none for port 80).
    pub fn host_ok(&self, host: &str) -> bool {
        let Some(bound) = self.bound.get() else {
            return false;
        };
        let Ok(auth) = host.parse::<axum::http::uri::Authority>() else {
            return false;
        };
        if auth.port_u16().unwrap_or(80) != bound.port() {
            return false;
        }
        let name = auth.host().trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = name.parse::<std::net::IpAddr>() {
            return bound.ip().is_unspecified() || ip == bound.ip();
        }
        let name = name.to_ascii_lowercase();
        (name == "localhost" && (bound.ip().is_loopback() || bound.ip().is_unspecified()))
            || self.allowed_hosts.contains(&name)
    }

    fn refuse(&self, req: &Request, code: StatusCode, why: &str, fix: &str) -> Response {
        if let Some(refused) = self.refusals.count() {
            // Everything from the request is escaped ({:?}): a header or a path must not
            // forge log lines.
            tracing::warn!(
                path = ?req.uri().path(),
                method = %req.method(),
                host = ?req.headers().get(header::HOST),
                origin = ?req.headers().get(header::ORIGIN),
                refused,
                "HTTP request refused: {why} ({refused} refused since the last such line, at most one line per {}s)",
                RefusalLog::EVERY.as_secs()
            );
        }
        let mut resp = (
            code,
            Json(serde_json::json!({ "error": format!("{why}; {fix}") })),
        )
            .into_response();
        if code == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// Middleware on every route but `/metrics` and `/health*`: refuses a `Host` that does
/// not name this server (DNS rebinding: a page at `evil.example` whose name resolves to
/// 127.0.0.1 sends `Host: evil.example`).
pub async fn check_host(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| access.host_ok(h));
    if ok {
        return next.run(req).await;
    }
    access.refuse(
        &req,
        StatusCode::MISDIRECTED_REQUEST,
        "the Host header does not name an address this server listens on",
        "reach it by its IP address (or localhost), or add the name to [http] allowed_hosts",
    )
}

/// Whether a content type is one a form or a no-CORS `fetch` may send cross-origin
/// without a preflight.
fn simple_content_type(value: &str) -> bool {
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime != "application/json"
}

fn cookie_session(req: &Request) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == SESSION_COOKIE).then(|| v.to_owned())
        })
}

/// Middleware on `/api/*`: refuses cross-origin requests and state-changing requests
/// with a form content type, then wants the token (`Authorization: Bearer`, or
/// `?token=` on the event stream, which `EventSource` cannot give headers) or a session
/// cookie, unless the API is open. Answers 403, 415 or 401 with a JSON error.
pub async fn guard_api(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = origin
            .to_str()
            .is_ok_and(|o| o.eq_ignore_ascii_case(&format!("http://{host}")));
        if !same {
            return access.refuse(
                &req,
                StatusCode::FORBIDDEN,
                "cross-origin request to the admin API",
                "use the status page this host serves, or the CLI",
            );
        }
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str(), Ok("same-origin" | "none"))
    {
        return access.refuse(
            &req,
            StatusCode::FORBIDDEN,
            "cross-site request to the admin API (Sec-Fetch-Site)",
            "use the status page this host serves, or the CLI",
        );
    }
    let changes_state = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if changes_state
        && let Some(ct) = headers.get(header::CONTENT_TYPE)
        && ct.to_str().map_or(true, simple_content_type)
    {
        return access.refuse(
            &req,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the admin API takes JSON only",
            "send Content-Type: application/json (or no body)",
        );
    }
    let Some(token) = &access.token else {
        return next.run(req).await;
    };
    let bearer = headers
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
    if presented.as_deref().is_some_and(|t| token.matches(t))
        || cookie_session(&req).is_some_and(|s| access.session_ok(&s))
    {
        return next.run(req).await;
    }
    let why = if presented.is_some() {
        "wrong admin token"
    } else {
        "missing admin token"
    };
    access.refuse(
        &req,
        StatusCode::UNAUTHORIZED,
        why,
        "send `Authorization: Bearer <token>` with the token from [http] token_env / token_file, or the generated <runtime_dir>/admin-token (the CLI reads it), or open the login URL the host printed at start",
    )
}

/// `GET /?login=<code>`: spends a one-time login code and sets the session cookie, then
/// sends the browser to the page without the code in its address. A spent or unknown
/// code leads to the page, which then asks for the token.
pub fn redeem_login(access: &Access, code: &str) -> Response {
    let mut resp = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, "/"), (header::CACHE_CONTROL, "no-store")],
    )
        .into_response();
    match access.redeem(code) {
        Some(id) => {
            if let Ok(v) = axum::http::HeaderValue::from_str(&format!(
                "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/"
            )) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            tracing::info!("status page login: a one-time login URL was used");
        }
        None => {
            if let Some(refused) = access.refusals.count() {
                tracing::warn!(
                    refused,
                    "status page login refused: the login code is spent or unknown (each login URL works once; restart or `daz login-url` prints a new one)"
                );
            }
        }
    }
    resp
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
    fn loopback_without_a_token_generates_one_beyond_it_refused() {
        let rt = Path::new("/run/daz");
        assert!(matches!(
            resolve(&http(""), rt, |_| None).unwrap(),
            TokenSetting::Generated(p) if p == Path::new("/run/daz/admin-token")
        ));
        assert!(matches!(
            resolve(&http("open = true"), rt, |_| None).unwrap(),
            TokenSetting::Open
        ));
        let err = resolve(&http("listen = \"0.0.0.0:9464\"\nopen = true"), rt, |_| {
            None
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a loopback address"), "{err}");
        let err = resolve(&http("listen = \"0.0.0.0:9464\""), rt, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("0.0.0.0:9464")
                && err.contains("DAZ_ADMIN_TOKEN")
                && err.contains("token_file"),
            "{err}"
        );
        let t = resolve(&http("listen = \"[::]:0\""), rt, |n| {
            (n == "DAZ_ADMIN_TOKEN").then(|| "a-long-enough-token\n".to_owned())
        })
        .unwrap();
        assert!(matches!(t, TokenSetting::Configured(t) if t.matches("a-long-enough-token")));
    }

    #[test]
    fn a_named_variable_must_be_set_and_tokens_long() {
        let err = resolve(&http("token_env = \"MY_TOKEN\""), Path::new("rt"), |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("MY_TOKEN is not set"), "{err}");
        let err = resolve(&http(""), Path::new("rt"), |_| {
            Some("short-secret".to_owned())
        })
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
        let t = resolve(&cfg, dir.path(), |_| None).unwrap();
        assert!(matches!(t, TokenSetting::Configured(t) if t.matches("file-token-0123456789")));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = resolve(&cfg, dir.path(), |_| None).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        let cfg = HttpConfig {
            token_file: Some(dir.path().join("missing")),
            ..HttpConfig::default()
        };
        let err = resolve(&cfg, dir.path(), |_| None).unwrap_err().to_string();
        assert!(err.contains("[http] token_file: cannot read"), "{err}");
    }

    #[test]
    fn the_generated_token_is_created_private_once_and_reused() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime").join(GENERATED_TOKEN_FILE);
        let a = load_or_create(&path).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        assert_eq!(
            load_or_create(&path).unwrap(),
            a,
            "reused on the next start"
        );
        // A file others can read is refused, never used or echoed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && !err.contains(&a), "{err}");
        // A symlink planted where the file goes is not followed.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
        assert!(load_or_create(&path).is_err());
        assert!(!dir.path().join("elsewhere").exists());
    }

    #[test]
    fn hosts_must_name_the_bound_address() {
        let a = Access::new(None, &["bot.example.org".to_owned()]);
        assert!(!a.host_ok("127.0.0.1:9464"), "not bound yet");
        a.bind("127.0.0.1:9464".parse().unwrap());
        for ok in [
            "127.0.0.1:9464",
            "localhost:9464",
            "LOCALHOST:9464",
            "bot.example.org:9464",
        ] {
            assert!(a.host_ok(ok), "{ok}");
        }
        for bad in [
            "evil.example:9464",
            "evil.example",
            "127.0.0.1:80",
            "127.0.0.2:9464",
            "127.0.0.1",
            "",
            "localhost.evil.example:9464",
        ] {
            assert!(!a.host_ok(bad), "{bad}");
        }
        let any = Access::new(None, &[]);
        any.bind("0.0.0.0:80".parse().unwrap());
        assert!(any.host_ok("192.168.1.7") && any.host_ok("[::1]:80"));
        assert!(!any.host_ok("evil.example"));
    }

    #[test]
    fn login_codes_work_once() {
        let a = Access::new(Some(AdminToken::new("0123456789abcdef")), &[]);
        a.bind("127.0.0.1:9464".parse().unwrap());
        let url = a.login_url().unwrap();
        let code = url.strip_prefix("http://127.0.0.1:9464/?login=").unwrap();
        let id = a.redeem(code).expect("first use");
        assert!(a.session_ok(&id));
        assert!(a.redeem(code).is_none(), "spent");
        assert!(!a.session_ok("forged"));
        assert!(
            Access::new(None, &[]).login_url().is_none(),
            "open: no login"
        );
    }
}
