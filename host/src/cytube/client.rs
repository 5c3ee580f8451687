//! The task of one room: it owns everything of the room (the websocket, the
//! [`InboundPipeline`], the [`Governor`] and the bus mailbox the governor's requests
//! arrive in) and serves that mailbox in every phase (connecting, connected, waiting to
//! reconnect, failed), so requests are held, expired or refused at any time.
//!
//! A session: [`discovery`](super::discovery) (`/socketconfig`) →
//! [`handshake`](super::handshake) (websocket, Engine.IO open, Socket.IO connect) →
//! `session` (join, login, liveness, the frames both ways).
//! State changes and failures are reported by `status`.
//!
//! Reconnects: capped exponential backoff with jitter ([`Backoff`]), and before every
//! websocket connect a slot from the site's shared [`ConnectBudget`] (the server's
//! per-IP budget). Discovery is plain HTTP the server does not count: it spends no
//! slot, and while it fails (the site is down) it is retried on a short backoff of its
//! own (at most `DISCOVERY_RETRY_CAP`, 1.5 s, apart), so rooms return moments after the site
//! does. Errors only an operator can fix stop the room (`failed`); a
//! duplicate-login kick and a ban follow the room's policy (`stop`, or a long, growing
//! delay).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use daz_bus::{Bus, Mailbox, SubscriberId};
use futures_util::StreamExt;
use rand::Rng;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use crate::config::{KickPolicy, RoomConfig};

pub use super::discovery::{Endpoint, discover, websocket_url};
pub use super::handshake::open_session;

use super::{
    backoff::{Backoff, ConnectBudget},
    credentials,
    error::{Recovery, RoomError},
    governor::{FailCode, Governor, GovernorConfig, Link, Next},
    inbound::InboundPipeline,
    metrics::CytubeMetrics,
    room::{ConnState, RoomShared},
    session::Session,
};

/// Longest wait between two discovery attempts while the site does not answer: the
/// room is back within this of the site answering again.
const DISCOVERY_RETRY_CAP: Duration = Duration::from_millis(1_500);

/// Far enough in the future to mean "never" for a deadline.
pub(super) const FAR: Duration = Duration::from_secs(86_400 * 365);

/// How a session ended.
enum Ended {
    /// The room is stopping.
    Stopped,
    /// Discovery failed: no connect was made, none of the budget spent.
    Discovery(RoomError),
    /// An error, and how long the session stayed joined.
    Error(RoomError, Option<Duration>),
}

/// The task of one room. Built by [`super::Rooms::start`].
pub(crate) struct RoomClient {
    pub(crate) cfg: RoomConfig,
    pub(crate) shared: Arc<RoomShared>,
    pub(crate) bus: Bus,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) sub_id: SubscriberId,
    pub(crate) governor: Governor,
    pub(crate) inbound: InboundPipeline,
    pub(crate) budget: Arc<ConnectBudget>,
    pub(crate) metrics: Arc<CytubeMetrics>,
    pub(crate) http: reqwest::Client,
    pub(crate) stop: CancellationToken,
    pub(crate) backoff: Backoff,
    /// Backoff between discovery attempts, capped at [`DISCOVERY_RETRY_CAP`]: a failed
    /// discovery costs the server one plain HTTP request and none of the connect budget.
    pub(crate) discovery_backoff: Backoff,
    pub(crate) policy_repeats: u32,
    pub(crate) room: Arc<str>,
    pub(crate) source: Arc<str>,
    /// The outbound queue length last published (status and gauge).
    pub(crate) last_queued: Option<usize>,
}

impl RoomClient {
    /// Builds the client of one room (no I/O yet).
    pub(crate) fn new(
        cfg: RoomConfig,
        shared: Arc<RoomShared>,
        common: &super::Common,
        mailbox: Arc<Mailbox>,
        sub_id: SubscriberId,
        stop: CancellationToken,
    ) -> Self {
        let room = shared.name.clone();
        let r = &cfg.reconnect;
        let budget = common.budgets.for_site(
            &cfg.site,
            r.connect_burst,
            Duration::from_millis(r.connect_refill_ms),
        );
        RoomClient {
            governor: Governor::new(&room, GovernorConfig::from(&cfg.outbound)),
            inbound: InboundPipeline::new(common.bus.clone(), shared.clone(), &common.metrics),
            backoff: Backoff::new(
                Duration::from_millis(r.initial_delay_ms),
                Duration::from_millis(r.max_delay_ms),
                r.jitter,
            ),
            discovery_backoff: Backoff::new(
                Duration::from_millis(r.initial_delay_ms).min(DISCOVERY_RETRY_CAP),
                Duration::from_millis(r.max_delay_ms).min(DISCOVERY_RETRY_CAP),
                r.jitter,
            ),
            source: Arc::from(format!("cytube:{room}")),
            policy_repeats: 0,
            last_queued: None,
            bus: common.bus.clone(),
            metrics: common.metrics.clone(),
            http: common.http.clone(),
            cfg,
            shared,
            mailbox,
            sub_id,
            budget,
            stop,
            room,
        }
    }

    /// Runs until the room is stopped.
    pub(crate) async fn run(mut self) {
        let mut delay = Duration::ZERO;
        loop {
            if !delay.is_zero() {
                let at = Instant::now() + delay;
                if !self.idle_until(Some(at)).await {
                    break;
                }
            }
            match self.session().await {
                Ended::Stopped => break,
                // The site did not answer `/socketconfig` (down, restarting, refusing):
                // nothing of the connect budget was spent, so retry soon, on a short
                // backoff of its own, to be back within moments of the site answering.
                Ended::Discovery(error) if error.recovery() == Recovery::Retry => {
                    let random: f64 = rand::rng().random();
                    let d = self.discovery_backoff.next_delay(random);
                    delay = d;
                    self.transition(ConnState::Disconnected, Some(&error), Some(d));
                    tracing::warn!(room = %self.room, kind = error.kind(), retry_in_ms = d.as_millis() as u64, error = %error, "channel discovery failed; retrying");
                }
                Ended::Discovery(error) => {
                    // Permanent (an unknown channel): the room fails below.
                    match self.next_delay(&error) {
                        Some(d) => {
                            delay = d;
                            self.transition(ConnState::Disconnected, Some(&error), Some(d));
                        }
                        None => {
                            self.fail(&error).await;
                            break;
                        }
                    }
                }
                Ended::Error(error, joined_for) => {
                    if joined_for.is_some_and(|d| {
                        d >= Duration::from_millis(self.cfg.reconnect.stable_after_ms)
                    }) {
                        self.backoff.reset();
                        self.policy_repeats = 0;
                    }
                    if matches!(error, RoomError::RateLimited) {
                        self.budget.exhausted(Instant::now());
                    }
                    match self.next_delay(&error) {
                        Some(d) => {
                            delay = d;
                            self.transition(ConnState::Disconnected, Some(&error), Some(d));
                            tracing::warn!(room = %self.room, kind = error.kind(), retry_in_ms = d.as_millis() as u64, error = %error, "room disconnected; reconnecting");
                        }
                        None => {
                            self.fail(&error).await;
                            break;
                        }
                    }
                }
            }
        }
        self.governor.fail_all(
            FailCode::Stopped,
            "the room is stopping (host shutdown or configuration change)",
        );
        self.report_failures();
        self.transition(ConnState::Stopped, None, None);
        self.bus.unregister(self.sub_id);
        self.mailbox.close();
    }

    /// The room stops for good: reported, held requests failed, then every new
    /// request refused until the room is stopped.
    async fn fail(&mut self, error: &RoomError) {
        self.transition(ConnState::Failed, Some(error), None);
        tracing::error!(room = %self.room, kind = error.kind(), error = %error, "room stopped: an operator must fix this, then restart the host");
        let reason = format!("room {} is stopped: {error}", self.room);
        self.governor.fail_all(FailCode::Stopped, &reason);
        self.report_failures();
        self.serve_failed(&reason).await;
    }

    /// The delay before the next attempt, or `None` to stop.
    fn next_delay(&mut self, error: &RoomError) -> Option<Duration> {
        let random: f64 = rand::rng().random();
        let policy = |p: KickPolicy, this: &mut Self| match p {
            KickPolicy::Stop => None,
            KickPolicy::Retry => {
                let base = Duration::from_millis(this.cfg.reconnect.policy_retry_ms);
                let factor = 1u32 << this.policy_repeats.min(3);
                this.policy_repeats = this.policy_repeats.saturating_add(1);
                Some((base * factor).min(base * 10))
            }
        };
        match error.recovery() {
            Recovery::Retry => Some(self.backoff.next_delay(random)),
            Recovery::RetryAfter(min) => Some(self.backoff.next_delay(random).max(min)),
            Recovery::Permanent => None,
            Recovery::DuplicateLoginPolicy => policy(self.cfg.reconnect.on_duplicate_login, self),
            Recovery::BanPolicy => policy(self.cfg.reconnect.on_ban, self),
        }
    }

    /// Waits until `until` (or forever) while serving the mailbox with the link down.
    /// Returns false when the room is stopping.
    async fn idle_until(&mut self, until: Option<Instant>) -> bool {
        let until = until.map_or_else(
            || tokio::time::Instant::now() + FAR,
            tokio::time::Instant::from_std,
        );
        let mailbox = self.mailbox.clone();
        let stop = self.stop.clone();
        loop {
            let wake = self.pump_down();
            tokio::select! {
                _ = stop.cancelled() => return false,
                () = sleep_until(until) => return true,
                env = mailbox.recv() => match env {
                    Some(env) => self.governor.submit(env, Instant::now(), Link::Down),
                    None => return false,
                },
                () = sleep_until(wake) => {}
            }
        }
    }

    /// Expires held requests; returns when to check again.
    fn pump_down(&mut self) -> tokio::time::Instant {
        let next = self.governor.next(Instant::now(), Link::Down);
        self.report_failures();
        self.publish_queued();
        match next {
            Next::At(at) => tokio::time::Instant::from_std(at),
            _ => tokio::time::Instant::now() + FAR,
        }
    }

    /// After a permanent failure: refuse every request until the room is stopped.
    async fn serve_failed(&mut self, reason: &str) {
        let mailbox = self.mailbox.clone();
        let stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                env = mailbox.recv() => match env {
                    Some(env) => {
                        self.governor.submit(env, Instant::now(), Link::Down);
                        self.governor.fail_all(FailCode::Stopped, reason);
                        self.report_failures();
                    }
                    None => return,
                },
            }
        }
    }

    /// Runs `work` while serving the mailbox with the link down; `None` when the room
    /// is stopping.
    async fn while_down<T>(
        &mut self,
        work: impl std::future::Future<Output = Result<T, RoomError>>,
    ) -> Option<Result<T, RoomError>> {
        tokio::pin!(work);
        let mailbox = self.mailbox.clone();
        let stop = self.stop.clone();
        loop {
            let wake = self.pump_down();
            tokio::select! {
                _ = stop.cancelled() => return None,
                r = &mut work => return Some(r),
                env = mailbox.recv() => if let Some(env) = env {
                    self.governor.submit(env, Instant::now(), Link::Down);
                },
                () = sleep_until(wake) => {}
            }
        }
    }

    /// One connection, from discovery to its end.
    async fn session(&mut self) -> Ended {
        self.shared.status.lock().connects += 1;
        self.transition(ConnState::Connecting, None, None);
        let creds = match credentials::resolve(&self.cfg) {
            Ok(c) => c,
            Err(e) => return Ended::Error(e, None),
        };
        let timeout = Duration::from_millis(self.cfg.reconnect.connect_timeout_ms);
        let http = self.http.clone();
        let site = self.cfg.site.clone();
        let channel = self.cfg.channel.clone();
        let discovery = async move {
            tokio::time::timeout(timeout, discover(&http, &site, &channel))
                .await
                .map_err(|_| RoomError::Timeout {
                    stage: "the socketconfig discovery",
                    after: timeout,
                })?
        };
        let endpoint = match self.while_down(discovery).await {
            None => return Ended::Stopped,
            Some(Ok(e)) => e,
            Some(Err(e)) => return Ended::Discovery(e),
        };
        self.discovery_backoff.reset();
        // Only the websocket connect spends the site's budget (the server counts
        // Socket.IO connects, not HTTP requests), so it is taken here, after discovery.
        let slot = self.budget.reserve(Instant::now());
        if slot > Instant::now() {
            tracing::info!(room = %self.room, wait_ms = (slot - Instant::now()).as_millis() as u64, "waiting for the site's connect budget");
            if !self.idle_until(Some(slot)).await {
                return Ended::Stopped;
            }
        }
        let (ws, open) = match self.while_down(open_session(&endpoint, timeout)).await {
            None => return Ended::Stopped,
            Some(Ok(x)) => x,
            Some(Err(e)) => return Ended::Error(e, None),
        };
        let (sink, stream) = ws.split();
        let mut s = Session::new(sink, stream, open, creds, timeout);
        self.transition(ConnState::Connected, None, None);
        self.inbound.new_session(s.creds.identity.name());
        self.governor.new_session();
        self.update_standing();
        let result = self.serve(&mut s).await;
        // Before the state transition is announced: a reader that sees
        // `disconnected` / `failed` never sees the old users and `logged_in: true`.
        self.inbound.connection_lost();
        let joined_for = s.joined_at.map(|t| t.elapsed());
        match result {
            Ok(()) => {
                s.close().await;
                Ended::Stopped
            }
            Err(e) => {
                // Best effort: tell the server we are going (it may be gone already).
                if !matches!(e, RoomError::Closed { .. } | RoomError::Dead { .. }) {
                    s.close().await;
                }
                Ended::Error(e, joined_for)
            }
        }
    }
}
