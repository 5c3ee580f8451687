//! The admin API client: where the host is, which token to send, and the mapping from
//! HTTP outcomes to the documented exit codes.
//!
//! The token, first found: `--token-file`, `$DAZ_ADMIN_TOKEN`, the configuration's
//! `[http] token_file` / `token_env`, then the token the host generated in its
//! `runtime_dir` (`admin-token`), so on the host's machine nobody types it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use reqwest::{Method, StatusCode};

use super::{ClientArgs, Exit, Failure};
use crate::config::{Config, DEFAULT_TOKEN_ENV};

/// How long to wait for the host to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take: a reload loads, checks and swaps a plugin, which may
/// take up to the plugin's `create` timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A connection to a host's admin API.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// The configuration file the client reads, if any: `--config` / `DAZ_CONFIG` must
/// exist; the default `plugins.toml` is read only when it is there.
fn load_config(args: &ClientArgs) -> Result<Option<Config>, Failure> {
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from("plugins.toml"), false),
    };
    if !explicit && !path.exists() {
        return Ok(None);
    }
    match Config::load(&path) {
        Ok(c) => Ok(Some(c)),
        // With --url the default file is only a source of token keys: a problem
        // elsewhere in it must not stop the client.
        Err(e) if !explicit && args.url.is_some() => {
            eprintln!("daz: ignoring {}: {e}", path.display());
            Ok(None)
        }
        Err(e) => Err(Failure::new(Exit::Usage, e.to_string())),
    }
}

/// The address a client reaches a host listening on `listen` at.
fn reachable(listen: SocketAddr) -> Result<String, String> {
    if listen.port() == 0 {
        return Err(format!(
            "[http] listen = \"{listen}\" picks a free port at start; pass the host's address with --url or DAZ_URL"
        ));
    }
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(format!("http://{}", SocketAddr::new(ip, listen.port())))
}

fn read_token(path: &Path) -> Result<String, Failure> {
    crate::http::auth::read_token_file(path)
        .map_err(|e| Failure::new(Exit::Usage, format!("--token-file: {e}")))
}

impl Client {
    /// A client for the host `args` point at.
    pub fn new(args: &ClientArgs) -> Result<Client, Failure> {
        let config = load_config(args)?;
        let base = match (&args.url, &config) {
            (Some(url), _) => {
                let parsed = url::Url::parse(url).map_err(|e| {
                    Failure::new(
                        Exit::Usage,
                        format!("--url {url:?}: {e}; expected like http://127.0.0.1:9464"),
                    )
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(Failure::new(
                        Exit::Usage,
                        format!(
                            "--url {url:?}: expected an http(s) URL like http://127.0.0.1:9464"
                        ),
                    ));
                }
                url.trim_end_matches('/').to_owned()
            }
            (None, Some(c)) => {
                if !c.http.enabled {
                    return Err(Failure::new(
                        Exit::Usage,
                        "[http] enabled = false in the configuration: the host serves no admin API"
                            .to_owned(),
                    ));
                }
                reachable(c.http.listen).map_err(|e| Failure::new(Exit::Usage, e))?
            }
            (None, None) => reachable(crate::config::HttpConfig::default().listen)
                .map_err(|e| Failure::new(Exit::Usage, e))?,
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let token = if let Some(file) = &args.token_file {
            Some(read_token(file)?)
        } else if let Some(t) = env(DEFAULT_TOKEN_ENV) {
            Some(t.trim().to_owned())
        } else if let Some(c) = &config
            && let Some(f) = &c.http.token_file
        {
            Some(
                crate::http::auth::read_token_file(f)
                    .map_err(|e| Failure::new(Exit::Usage, e.to_string()))?,
            )
        } else if let Some(t) = config.as_ref().and_then(|c| env(c.http.token_env_name())) {
            Some(t.trim().to_owned())
        } else {
            // The token the host generated on its first start, in its runtime directory.
            let runtime_dir = config.as_ref().map_or_else(
                || crate::config::HostConfig::default().runtime_dir,
                |c| c.host.runtime_dir.clone(),
            );
            let file = crate::http::auth::generated_token_path(&runtime_dir);
            if file.exists() {
                Some(
                    crate::http::auth::read_token_file(&file)
                        .map_err(|e| Failure::new(Exit::Usage, e.to_string()))?,
                )
            } else {
                None
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("daz-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Failure::new(Exit::Failed, format!("cannot build the HTTP client: {e}"))
            })?;
        Ok(Client { base, token, http })
    }

    /// The host's base URL (never holds the token).
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    fn unreachable(&self, e: &reqwest::Error) -> Failure {
        // reqwest's message names the URL, which holds no secret.
        Failure::new(
            Exit::Unreachable,
            format!(
                "cannot reach the daz host at {}: {}; is it running? (address from --url, DAZ_URL or [http] listen)",
                self.base,
                error_chain(e)
            ),
        )
    }

    /// Sends a request and returns the JSON body of a 2xx answer; anything else becomes
    /// the failure with its exit code.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, Failure> {
        let mut req = self.request(method, path).timeout(REQUEST_TIMEOUT);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.unreachable(&e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        Err(self.failure(status, &value))
    }

    fn failure(&self, status: StatusCode, body: &serde_json::Value) -> Failure {
        let message = body["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        let code = match status {
            StatusCode::UNAUTHORIZED => {
                return Failure::new(
                    Exit::Unauthorized,
                    format!(
                        "the host refused the request ({message}); give the admin token in {DEFAULT_TOKEN_ENV} or with --token-file, or run the command where the host's plugins.toml is (the CLI reads the token the host generated in its runtime_dir)"
                    ),
                );
            }
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Exit::Usage,
            _ => Exit::Failed,
        };
        Failure::new(code, format!("{message} (HTTP {})", status.as_u16())).with_body(body.clone())
    }

    /// Opens the live event stream; returns the response once the host confirmed the
    /// subscription (`: ready`), with what was read after it.
    pub async fn stream(&self, path: &str) -> Result<EventStream, Failure> {
        let resp = self
            .request(Method::GET, path)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
            return Err(self.failure(status, &value));
        }
        let mut s = EventStream {
            resp,
            buf: Vec::new(),
            base: self.base.clone(),
        };
        loop {
            match s.next_frame().await? {
                Some(Frame::Comment(c)) if c == "ready" => return Ok(s),
                Some(_) => {}
                None => {
                    return Err(Failure::new(
                        Exit::Unreachable,
                        format!("the host at {} closed the event stream", self.base),
                    ));
                }
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = s.source();
    }
    out
}

/// One Server-Sent Events frame.
#[derive(Debug)]
pub enum Frame {
    /// A comment line (`: ready`, keep-alives).
    Comment(String),
    /// An event: its name (`None` for plain data) and data.
    Event {
        /// `event:` field.
        name: Option<String>,
        /// `data:` lines joined by newlines.
        data: String,
    },
}

/// The live event stream.
pub struct EventStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
    base: String,
}

impl EventStream {
    /// The next frame, or `None` when the host closed the stream.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, Failure> {
        loop {
            if let Some(end) = find_blank_line(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..end.0).collect();
                self.buf.drain(..end.1 - end.0);
                if let Some(frame) = parse_block(&String::from_utf8_lossy(&block)) {
                    return Ok(Some(frame));
                }
                continue;
            }
            match self.resp.chunk().await {
                Ok(Some(bytes)) => self.buf.extend_from_slice(&bytes),
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(Failure::new(
                        Exit::Unreachable,
                        format!(
                            "the event stream from {} broke: {}",
                            self.base,
                            error_chain(&e)
                        ),
                    ));
                }
            }
        }
    }
}

/// The end of the first block (`\n\n` or `\r\n\r\n`): (block end, separator end).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn parse_block(block: &str) -> Option<Frame> {
    let mut name = None;
    let mut data: Vec<&str> = Vec::new();
    let mut comment = None;
    for line in block.lines() {
        if let Some(c) = line.strip_prefix(':') {
            comment = Some(c.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        } else if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim().to_owned());
        }
    }
    if data.is_empty() {
        return comment.map(Frame::Comment);
    }
    Some(Frame::Event {
        name,
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:9464".parse().unwrap()).unwrap(),
            "http://127.0.0.1:9464"
        );
        assert_eq!(
            reachable("[::]:80".parse().unwrap()).unwrap(),
            "http://[::1]:80"
        );
        assert!(reachable("127.0.0.1:0".parse().unwrap()).is_err());
    }

    #[test]
    fn sse_blocks_parse() {
        let buf = b": ready\n\ndata: {\"a\":1}\n\nevent: lagged\ndata: {\"missed\":3}\n\n";
        let (end, sep) = find_blank_line(buf).unwrap();
        assert!(
            matches!(parse_block(std::str::from_utf8(&buf[..end]).unwrap()), Some(Frame::Comment(c)) if c == "ready")
        );
        let rest = &buf[sep..];
        let (end, sep) = find_blank_line(rest).unwrap();
        assert!(
            matches!(parse_block(std::str::from_utf8(&rest[..end]).unwrap()), Some(Frame::Event { name: None, data }) if data == "{\"a\":1}")
        );
        let rest = &rest[sep..];
        let (end, _) = find_blank_line(rest).unwrap();
        assert!(
            matches!(parse_block(std::str::from_utf8(&rest[..end]).unwrap()), Some(Frame::Event { name: Some(n), .. }) if n == "lagged")
        );
    }
}
