//! One websocket connection: the Engine.IO 4 handshake, heartbeats, reading
//! frames into the world and writing the world's frames out.
//!
//! Lifecycle: open packet → (client `40`) → events both ways → ends on client
//! close, server disconnect (`41` + close), ping timeout, connect timeout,
//! a malformed frame, or a fault (abort = TCP close without any closing frame).
//! On every ending the world is told, so the user leaves its channel.
//!
//! Frames are processed in order; with a configured processing lag (or during a
//! processing pause) they wait in a per-socket queue until their processing time.
//!
//! While the simulator is stalled nothing is read or written (pings included);
//! outgoing frames wait in order and go out when the stall ends. An abort still
//! goes through during a stall.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use daz_cytube_proto::frame::{self, EioPacket, FrameError, OpenInfo, SioPacket};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::server::Shared;
use crate::world::Out;

/// Why a connection ended (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ClientClosed,
    ServerDisconnect,
    Aborted,
    ServerClosed,
    PingTimeout,
    ConnectTimeout,
    BadFrame,
}

/// Runs a connection until it ends.
pub(crate) async fn serve_socket(shared: Arc<Shared>, ws: WebSocket, ip: IpAddr) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (id, eio_sid) = {
        let mut w = shared.world.lock();
        let (id, sid, _generation) = w.register(ip, tx);
        (id, sid)
    };
    shared.bump();
    let end = run(&shared, ws, id, eio_sid, rx).await;
    tracing::debug!(socket = id, %ip, end = ?end, "connection ended");
    shared.world.lock().on_close(id);
    shared.bump();
}

async fn run(
    shared: &Arc<Shared>,
    ws: WebSocket,
    id: u64,
    eio_sid: String,
    mut rx: mpsc::UnboundedReceiver<Out>,
) -> End {
    let cfg = &shared.cfg;
    let (mut sink, mut stream) = ws.split();
    let open = frame::encode_open(&OpenInfo {
        sid: eio_sid,
        upgrades: Vec::new(),
        ping_interval_ms: cfg.ping_interval.as_millis() as u64,
        ping_timeout_ms: cfg.ping_timeout.as_millis() as u64,
        max_payload: frame::MAX_FRAME_BYTES as u64,
    });
    let mut stalled = shared.stalled.subscribe();
    let mut held: VecDeque<Out> = VecDeque::new();
    if !*stalled.borrow() && sink.send(Message::Text(open.clone().into())).await.is_err() {
        return End::ClientClosed;
    }
    let mut open_pending = *stalled.borrow();
    let mut next_ping = Instant::now() + cfg.ping_interval;
    let mut pong_deadline: Option<Instant> = None;
    let connect_deadline = Instant::now() + cfg.connect_timeout;
    let mut connected = false;
    let far = Duration::from_secs(86_400 * 365);
    // Frames read but not processed yet (processing lag), with their processing time.
    let mut pending: VecDeque<(Instant, String)> = VecDeque::new();
    let mut last_arrival: Option<Instant> = None;

    loop {
        if *stalled.borrow() {
            tokio::select! {
                changed = stalled.changed() => {
                    if changed.is_err() {
                        return End::ServerClosed;
                    }
                    if !*stalled.borrow() {
                        // Heartbeats restart from now; nothing was sent meanwhile.
                        next_ping = Instant::now() + cfg.ping_interval;
                        pong_deadline = None;
                    }
                }
                out = rx.recv() => match out {
                    None => return End::ServerClosed,
                    Some(Out::Abort) => return End::Aborted,
                    Some(other) => held.push_back(other),
                },
            }
            continue;
        }
        if open_pending {
            open_pending = false;
            if sink.send(Message::Text(open.clone().into())).await.is_err() {
                return End::ClientClosed;
            }
        }
        while let Some(out) = held.pop_front() {
            if let Some(end) = write_out(&mut sink, out, &mut connected).await {
                return end;
            }
        }
        let mut deadline = pong_deadline.unwrap_or(next_ping);
        if !connected {
            deadline = deadline.min(connect_deadline);
        }
        let deadline = deadline.min(Instant::now() + far);
        let process_at = pending.front().map_or(Instant::now() + far, |(at, _)| {
            let hold = *shared.hold_processing.lock();
            hold.map_or(*at, |h| h.max(*at))
        });
        tokio::select! {
            biased;
            out = rx.recv() => match out {
                None => return End::ServerClosed,
                Some(out) => {
                    if let Some(end) = write_out(&mut sink, out, &mut connected).await {
                        return end;
                    }
                }
            },
            changed = stalled.changed() => {
                if changed.is_err() {
                    return End::ServerClosed;
                }
            }
            msg = stream.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return End::ClientClosed,
                Some(Ok(Message::Text(text))) => {
                    let now = Instant::now();
                    let lag = processing_lag(&cfg.processing_lag, last_arrival, now);
                    last_arrival = Some(now);
                    let hold = *shared.hold_processing.lock();
                    let held = hold.is_some_and(|h| h > now);
                    if !lag.is_zero() || held || !pending.is_empty() {
                        let mut due = now + lag;
                        if let Some((prev, _)) = pending.back() {
                            due = due.max(*prev);
                        }
                        pending.push_back((due, text.to_string()));
                        continue;
                    }
                    match handle_text(shared, id, text.as_str(), &mut pong_deadline) {
                        Inbound::Continue => {}
                        Inbound::Pong => next_ping = Instant::now() + cfg.ping_interval,
                        Inbound::End(end) => {
                            if end == End::BadFrame {
                                let _ = sink.send(Message::Close(None)).await;
                            }
                            return end;
                        }
                    }
                    shared.bump();
                }
                // Engine.IO over websocket carries text frames only here;
                // websocket pings are answered by the library.
                Some(Ok(_)) => {}
            },
            () = sleep_until(process_at) => {
                let now = Instant::now();
                let hold = *shared.hold_processing.lock();
                while let Some((at, _)) = pending.front() {
                    if *at > now || hold.is_some_and(|h| h > now) {
                        break;
                    }
                    let Some((_, text)) = pending.pop_front() else { break };
                    match handle_text(shared, id, &text, &mut pong_deadline) {
                        Inbound::Continue => {}
                        Inbound::Pong => next_ping = Instant::now() + cfg.ping_interval,
                        Inbound::End(end) => {
                            if end == End::BadFrame {
                                let _ = sink.send(Message::Close(None)).await;
                            }
                            return end;
                        }
                    }
                    shared.bump();
                }
            }
            () = sleep_until(deadline) => {
                let now = Instant::now();
                if !connected && now >= connect_deadline {
                    let _ = sink.send(Message::Close(None)).await;
                    return End::ConnectTimeout;
                }
                match pong_deadline {
                    Some(d) if now >= d => {
                        let _ = sink.send(Message::Close(None)).await;
                        return End::PingTimeout;
                    }
                    Some(_) => {}
                    None if now >= next_ping => {
                        if sink.send(Message::Text(frame::PING.into())).await.is_err() {
                            return End::ClientClosed;
                        }
                        pong_deadline = Some(now + cfg.ping_timeout);
                    }
                    None => {}
                }
            }
        }
    }
}

/// The processing lag of a frame arriving at `now` (zero outside a burst).
fn processing_lag(
    lag: &crate::config::ProcessingLag,
    last_arrival: Option<Instant>,
    now: Instant,
) -> Duration {
    use rand::Rng;
    let burst = last_arrival.is_some_and(|l| now.saturating_duration_since(l) < lag.burst_gap);
    if lag.is_none() || !burst {
        return Duration::ZERO;
    }
    let (min, max) = (lag.min.min(lag.max), lag.max);
    let span = u64::try_from((max - min).as_micros()).unwrap_or(0);
    min + Duration::from_micros(rand::rng().random_range(0..=span))
}

/// Writes one outgoing item; returns how the connection ends, if it does.
async fn write_out(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    out: Out,
    connected: &mut bool,
) -> Option<End> {
    match out {
        Out::Text(text) => {
            // The world answers `40` with `40{sid}` (accepted) or `44{…}`.
            if text.starts_with("40") {
                *connected = true;
            }
            sink.send(Message::Text(text.into()))
                .await
                .err()
                .map(|_| End::ClientClosed)
        }
        Out::Disconnect => {
            let _ = sink.send(Message::Text(frame::SIO_DISCONNECT.into())).await;
            let _ = sink.send(Message::Close(None)).await;
            Some(End::ServerDisconnect)
        }
        Out::Abort => Some(End::Aborted),
    }
}

enum Inbound {
    Continue,
    Pong,
    End(End),
}

fn handle_text(
    shared: &Arc<Shared>,
    id: u64,
    text: &str,
    pong_deadline: &mut Option<Instant>,
) -> Inbound {
    let packet = match frame::parse(text) {
        Ok(p) => p,
        Err(FrameError::BadEvent(why)) => {
            tracing::debug!(socket = id, %why, "malformed event ignored");
            return Inbound::Continue;
        }
        Err(e) => {
            tracing::debug!(socket = id, error = %e, "unparsable frame; closing like the real server");
            return Inbound::End(End::BadFrame);
        }
    };
    match packet {
        EioPacket::Pong(_) => {
            if pong_deadline.take().is_some() {
                return Inbound::Pong;
            }
            Inbound::Continue
        }
        EioPacket::Close => Inbound::End(End::ClientClosed),
        EioPacket::Message(SioPacket::Connect(_)) => {
            shared.world.lock().sio_connect(id);
            Inbound::Continue
        }
        EioPacket::Message(SioPacket::Disconnect) => Inbound::End(End::ClientClosed),
        EioPacket::Message(SioPacket::Event { name, payload, .. }) => {
            let value: Option<Value> = match payload.map(|raw| serde_json::from_str(raw.get())) {
                None => None,
                Some(Ok(v)) => Some(v),
                Some(Err(_)) => return Inbound::Continue,
            };
            shared.world.lock().on_event(id, &name, value.as_ref());
            Inbound::Continue
        }
        _ => Inbound::Continue,
    }
}
