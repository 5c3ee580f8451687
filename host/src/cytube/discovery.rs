//! Channel discovery: `GET <site>/socketconfig/<channel>.json` → the websocket URL of the
//! channel's socket server (a secure one preferred).
//!
//! Plain HTTP: the server does not count it against the per-IP connect budget, so
//! neither does the room (only websocket connects spend a slot, see [`super::client`]).
//!
//! Bounded: the answer is read in chunks and abandoned past [`MAX_DISCOVERY_BYTES`]
//! (a real answer is about 100 bytes), and the caller bounds the time (the room's
//! `connect_timeout_ms`). A site answering an endless body costs at most that buffer,
//! freed when the attempt ends.

use serde::Deserialize;

use super::error::RoomError;

/// Where to connect: the websocket URL from discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `ws(s)://host:port/socket.io/?EIO=4&transport=websocket`.
    pub ws_url: String,
    /// Whether the server said it is secure.
    pub secure: bool,
}

#[derive(Deserialize)]
struct SocketConfig {
    #[serde(default)]
    servers: Vec<ServerEntry>,
}

#[derive(Deserialize)]
struct ServerEntry {
    url: String,
    #[serde(default)]
    secure: bool,
}

#[derive(Deserialize)]
struct DiscoveryError {
    #[serde(default)]
    error: String,
}

/// The websocket URL of a socket server URL (`https://h:p` → `wss://h:p/socket.io/…`).
pub fn websocket_url(server: &str) -> Result<String, String> {
    let mut url = url::Url::parse(server).map_err(|e| format!("bad server URL {server:?}: {e}"))?;
    let scheme = match url.scheme() {
        "https" | "wss" => "wss",
        "http" | "ws" => "ws",
        other => return Err(format!("server URL {server:?} has scheme {other:?}")),
    };
    url.set_scheme(scheme)
        .map_err(|()| format!("cannot use scheme {scheme} for {server:?}"))?;
    url.set_path("/socket.io/");
    url.set_query(Some("EIO=4&transport=websocket"));
    Ok(url.to_string())
}

/// Largest `/socketconfig` answer read. The server's answer is one small JSON object;
/// anything larger is refused without reading further.
pub const MAX_DISCOVERY_BYTES: usize = 16 * 1024;

/// Reads at most [`MAX_DISCOVERY_BYTES`] of `resp`'s body; more is an error.
async fn bounded_body(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_DISCOVERY_BYTES as u64)
    {
        return Err(format!(
            "the answer announces {} bytes; at most {MAX_DISCOVERY_BYTES} are read",
            resp.content_length().unwrap_or_default()
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_DISCOVERY_BYTES {
            return Err(format!(
                "the answer is larger than {MAX_DISCOVERY_BYTES} bytes; not a socket config"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Asks `<site>/socketconfig/<channel>.json` where the socket server is; prefers a
/// secure one. Reads at most [`MAX_DISCOVERY_BYTES`]; the caller bounds the time.
pub async fn discover(
    http: &reqwest::Client,
    site: &str,
    channel: &str,
) -> Result<Endpoint, RoomError> {
    let url = format!("{}/socketconfig/{channel}.json", site.trim_end_matches('/'));
    let discovery = |why: String| RoomError::Discovery {
        url: url.clone(),
        why,
    };
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| discovery(e.to_string()))?;
    let status = resp.status();
    let body = bounded_body(resp).await.map_err(discovery)?;
    if status == reqwest::StatusCode::NOT_FOUND {
        let message = serde_json::from_slice::<DiscoveryError>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
        return Err(RoomError::UnknownChannel {
            site: site.to_owned(),
            channel: channel.to_owned(),
            message,
        });
    }
    if !status.is_success() {
        return Err(discovery(format!("HTTP {status}")));
    }
    let config: SocketConfig = serde_json::from_slice(&body)
        .map_err(|e| discovery(format!("the answer is not a socket config: {e}")))?;
    let best = config
        .servers
        .iter()
        .find(|s| s.secure)
        .or_else(|| config.servers.first())
        .ok_or_else(|| discovery("the socket config lists no servers".to_owned()))?;
    Ok(Endpoint {
        ws_url: websocket_url(&best.url).map_err(discovery)?,
        secure: best.secure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_follow_the_scheme() {
        assert_eq!(
            websocket_url("https://sync.example:8443").unwrap(),
            "wss://sync.example:8443/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            websocket_url("http://127.0.0.1:1337/").unwrap(),
            "ws://127.0.0.1:1337/socket.io/?EIO=4&transport=websocket"
        );
        assert!(websocket_url("ftp://x").is_err());
    }
}
