//! Status reporting of one room: connection state transitions (status, metrics, log,
//! `host.room.<room>.<state>` with `{room, channel, site, state, previous, error?,
//! kind?, retry_in_ms?}`), the outbound queue length, and failures published as
//! `cytube.out.<room>.failed`.

use std::{sync::Arc, time::Duration};

use daz_bus::{Envelope, Priority};

use super::{
    client::RoomClient,
    error::RoomError,
    governor::Failure,
    room::{ConnState, ErrorInfo},
};

impl RoomClient {
    pub(super) fn publish_queued(&mut self) {
        let n = self.governor.queued();
        if self.last_queued == Some(n) {
            return;
        }
        self.last_queued = Some(n);
        self.shared.status.lock().outbound_queued = n;
        self.metrics
            .queued
            .with_label_values(&[&self.room])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Publishes every failure as `cytube.out.<room>.failed` (see the module docs of
    /// [`super`] for who receives it).
    pub(super) fn report_failures(&mut self) {
        for f in self.governor.take_failures() {
            self.report_failure(&f);
        }
    }

    fn report_failure(&self, f: &Failure) {
        self.metrics
            .failed
            .with_label_values(&[&self.room, f.plugin(), f.code.as_str()])
            .inc();
        tracing::info!(room = %self.room, plugin = f.plugin(), event = %f.event, code = f.code.as_str(), reason = %f.reason, "outbound request failed; reported");
        let subject = format!("cytube.out.{}.failed", self.room);
        let payload = match serde_json::to_vec(&f.to_json()) {
            Ok(p) => p,
            Err(_) => return,
        };
        let mut b = Envelope::builder(subject, payload)
            .room(self.room.clone())
            .source(self.source.clone())
            .priority(Priority::High);
        let correlation = f
            .original
            .correlation_id
            .clone()
            .unwrap_or_else(|| Arc::from(f.original.id.to_string()));
        b = b.correlation_id(correlation);
        let Ok(env) = b.build() else { return };
        // On the subject for every watcher (the retry plugin), and to the plugin that
        // asked even when it does not subscribe to failures: one copy each.
        if let Err(e) = self.bus.publish_also_to(env, f.plugin()) {
            tracing::warn!(room = %self.room, plugin = f.plugin(), error = %e, "could not deliver a failure report");
        }
    }

    /// Records and announces a state transition.
    pub(super) fn transition(
        &self,
        state: ConnState,
        error: Option<&RoomError>,
        retry_in: Option<Duration>,
    ) {
        let previous = {
            let mut st = self.shared.status.lock();
            let previous = st.state;
            st.state = state;
            st.since_ms = crate::now_ms();
            // Set with the state, so a reader never sees `disconnected` without it.
            st.retry_at_ms = retry_in.map(|d| {
                st.since_ms
                    .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            });
            if let Some(e) = error {
                st.last_error = Some(ErrorInfo {
                    kind: e.kind().to_owned(),
                    message: e.to_string(),
                    at_ms: st.since_ms,
                });
            }
            previous
        };
        self.metrics
            .state
            .with_label_values(&[&self.room])
            .set(state.code());
        self.metrics
            .transitions
            .with_label_values(&[&self.room, state.as_str()])
            .inc();
        if let Some(e) = error {
            self.metrics
                .errors
                .with_label_values(&[&self.room, e.kind()])
                .inc();
        }
        if !matches!(state, ConnState::Disconnected | ConnState::Failed) {
            tracing::info!(room = %self.room, state = state.as_str(), "room state");
        }
        let payload = serde_json::json!({
            "room": &*self.room,
            "channel": self.cfg.channel,
            "site": self.cfg.site,
            "state": state,
            "previous": previous,
            "error": error.map(ToString::to_string),
            "kind": error.map(RoomError::kind),
            "retry_in_ms": retry_in.map(|d| d.as_millis() as u64),
        });
        let subject = format!("host.room.{}.{}", self.room, state.as_str());
        let env = serde_json::to_vec(&payload).ok().and_then(|p| {
            Envelope::builder(subject, p)
                .room(self.room.clone())
                .source(self.source.clone())
                .priority(Priority::High)
                .build()
                .ok()
        });
        if let Some(env) = env {
            let _ = self.bus.publish(env);
        }
    }
}
