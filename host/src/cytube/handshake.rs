//! Opening a session: the websocket (tokio-tungstenite, TLS by rustls), the Engine.IO
//! open packet (pingInterval, pingTimeout, maxPayload), the Socket.IO connect and its
//! ack. Each wait has a deadline; nothing here sleeps.

use std::time::Duration;

use daz_cytube_proto::frame::{self, EioPacket, OpenInfo, SioPacket};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, protocol::WebSocketConfig},
};

use super::{discovery::Endpoint, error::RoomError};

/// The websocket of one session.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens the websocket and completes the Engine.IO and Socket.IO handshakes.
pub async fn open_session(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<(Ws, OpenInfo), RoomError> {
    // A room reads a few small frames a second. tungstenite allocates the read buffer
    // up front (default 128 KiB) and zero-fills it before every read, including the one
    // that finds nothing: 2 KiB keeps a room's footprint and its per-frame cost small
    // (most frames are under 300 bytes); a large frame (a long playlist) is read in
    // several chunks.
    let config = WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .max_message_size(Some(frame::MAX_FRAME_BYTES))
        .max_frame_size(Some(frame::MAX_FRAME_BYTES));
    // TCP_NODELAY (`true`): a chat answer is one small frame that must not wait for
    // the server's delayed ACK of the previous one.
    let nodelay = true;
    let connect = tokio_tungstenite::connect_async_with_config(
        endpoint.ws_url.as_str(),
        Some(config),
        nodelay,
    );
    let (mut ws, _resp) = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| RoomError::Timeout {
            stage: "the websocket to open",
            after: timeout,
        })?
        .map_err(|e| RoomError::Connect {
            url: endpoint.ws_url.clone(),
            why: e.to_string(),
        })?;
    let deadline = tokio::time::Instant::now() + timeout;
    let open = loop {
        let text = next_text(&mut ws, deadline, "the Engine.IO open packet").await?;
        match frame::parse(&text) {
            Ok(EioPacket::Open(info)) => break info,
            Ok(EioPacket::Ping(_) | EioPacket::Noop) => {}
            Ok(other) => {
                return Err(RoomError::Protocol {
                    why: format!("expected the Engine.IO open packet, got {}", other.encode()),
                });
            }
            Err(e) => {
                return Err(RoomError::Protocol {
                    why: format!("bad open packet: {e}"),
                });
            }
        }
    };
    ws.send(Message::Text(frame::SIO_CONNECT.into()))
        .await
        .map_err(|e| RoomError::Closed {
            how: format!("sending the Socket.IO connect failed: {e}"),
        })?;
    loop {
        let text = next_text(&mut ws, deadline, "the Socket.IO connect ack").await?;
        match frame::parse(&text) {
            Ok(EioPacket::Message(SioPacket::Connect(_))) => return Ok((ws, open)),
            Ok(EioPacket::Message(SioPacket::ConnectError(raw))) => {
                let message = raw
                    .and_then(|r| {
                        serde_json::from_str::<serde_json::Value>(r.get())
                            .ok()
                            .and_then(|v| {
                                v.get("message").and_then(|m| m.as_str()).map(str::to_owned)
                            })
                    })
                    .unwrap_or_default();
                return Err(if message.to_ascii_lowercase().contains("rate limit") {
                    RoomError::RateLimited
                } else {
                    RoomError::ConnectRefused { message }
                });
            }
            Ok(EioPacket::Ping(data)) => {
                let _ = ws
                    .send(Message::Text(frame::encode_pong(data).into()))
                    .await;
            }
            Ok(EioPacket::Close | EioPacket::Message(SioPacket::Disconnect)) => {
                return Err(RoomError::Closed {
                    how: "the server closed during the Socket.IO handshake".to_owned(),
                });
            }
            Ok(_) => {}
            Err(e) => {
                return Err(RoomError::Protocol {
                    why: format!("bad frame during the handshake: {e}"),
                });
            }
        }
    }
}

pub(crate) async fn next_text(
    ws: &mut Ws,
    deadline: tokio::time::Instant,
    stage: &'static str,
) -> Result<String, RoomError> {
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| RoomError::Timeout {
                stage,
                after: Duration::ZERO,
            })?;
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(_))) | None => {
                return Err(RoomError::Closed {
                    how: format!("the server closed while we waited for {stage}"),
                });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ws_error(e)),
        }
    }
}

pub(crate) fn ws_error(e: tungstenite::Error) -> RoomError {
    use tungstenite::error::ProtocolError;
    match e {
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            RoomError::Closed {
                how: "the connection was reset without a close frame".to_owned(),
            }
        }
        tungstenite::Error::Capacity(c) => RoomError::Protocol {
            why: format!(
                "oversized frame refused ({c}); the server's frames must stay within {} bytes",
                frame::MAX_FRAME_BYTES
            ),
        },
        tungstenite::Error::Protocol(p) => RoomError::Protocol {
            why: format!("websocket protocol error: {p}"),
        },
        other => RoomError::Closed {
            how: format!("transport error: {other}"),
        },
    }
}
