//! Metric families of the Cytube client, registered in the host's registry.
//!
//! Labels are bounded: room names (from `plugins.toml`), plugin names (bus sources),
//! connection states, error kinds and failure codes (fixed sets). Never user names,
//! chat text or event names the server invents.

use std::sync::Arc;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    core::Collector,
};

use crate::metrics::Metrics;

/// The client's metrics.
pub struct CytubeMetrics {
    /// Current connection state per room (the numeric code of `ConnState`).
    pub state: IntGaugeVec,
    /// State transitions, by room and state entered.
    pub transitions: IntCounterVec,
    /// Connection errors, by room and kind.
    pub errors: IntCounterVec,
    /// Server events received and published, by room.
    pub inbound: IntCounterVec,
    /// Frames that could not be parsed or decoded, by room.
    pub bad_frames: IntCounterVec,
    /// Frames sent on behalf of plugins, by room and plugin.
    pub sent: IntCounterVec,
    /// Requests that had to wait (flood limits, disconnected), by room and plugin.
    pub delayed: IntCounterVec,
    /// Requests reported failed, by room, plugin and code.
    pub failed: IntCounterVec,
    /// Time from a plugin's request to the frame going out, by room.
    pub delay: HistogramVec,
    /// Requests waiting in the governor, by room.
    pub queued: IntGaugeVec,
    /// Users and playlist items the room state refused at its caps, by room and cap.
    pub capped: IntCounterVec,
}

fn reg<C: Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    // Only a duplicate name fails, which means a second client on the same registry
    // (tests starting two hosts share nothing, so this is a programming error): log it.
    if let Err(e) = r.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "cytube metric registration failed");
    }
    c
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    match IntCounterVec::new(Opts::new(name, help), labels) {
        Ok(c) => reg(r, c),
        Err(e) => unreachable_metric(name, e),
    }
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    match IntGaugeVec::new(Opts::new(name, help), labels) {
        Ok(c) => reg(r, c),
        Err(e) => unreachable_metric(name, e),
    }
}

// Names and labels are constants checked by the unit test below; a failure here is a
// bug in this file, found by that test before any release.
fn unreachable_metric<T>(name: &str, e: prometheus::Error) -> T {
    panic!("metric {name} is malformed: {e}")
}

impl CytubeMetrics {
    /// Creates and registers the families in the host's registry.
    pub fn new(metrics: &Metrics) -> Arc<Self> {
        let r = metrics.registry();
        let delay = match HistogramVec::new(
            HistogramOpts::new(
                "daz_cytube_outbound_delay_seconds",
                "Time from a plugin's request to its frame going out",
            )
            .buckets(vec![
                1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                120.0,
            ]),
            &["room"],
        ) {
            Ok(h) => reg(r, h),
            Err(e) => unreachable_metric("daz_cytube_outbound_delay_seconds", e),
        };
        Arc::new(Self {
            state: gauge(
                r,
                "daz_cytube_connection_state",
                "Connection state per room: 0 idle, 1 connecting, 2 connected, 3 joined, 4 logged_in, 5 disconnected, 6 failed, 7 stopped",
                &["room"],
            ),
            transitions: counter(
                r,
                "daz_cytube_state_transitions_total",
                "Connection state transitions, by state entered",
                &["room", "state"],
            ),
            errors: counter(
                r,
                "daz_cytube_connection_errors_total",
                "Connection errors, by kind",
                &["room", "kind"],
            ),
            inbound: counter(
                r,
                "daz_cytube_inbound_events_total",
                "Server events received and published on cytube.in",
                &["room"],
            ),
            capped: counter(
                r,
                "daz_cytube_room_capped_total",
                "Users and playlist items not kept because the room state was at its cap (what: users, playlist)",
                &["room", "what"],
            ),
            bad_frames: counter(
                r,
                "daz_cytube_inbound_bad_frames_total",
                "Frames from the server that could not be parsed or decoded",
                &["room"],
            ),
            sent: counter(
                r,
                "daz_cytube_outbound_sent_total",
                "Frames sent on behalf of plugins",
                &["room", "plugin"],
            ),
            delayed: counter(
                r,
                "daz_cytube_outbound_delayed_total",
                "Requests that waited for the flood limits or a reconnect",
                &["room", "plugin"],
            ),
            failed: counter(
                r,
                "daz_cytube_outbound_failed_total",
                "Requests reported failed to their plugin",
                &["room", "plugin", "code"],
            ),
            delay,
            queued: gauge(
                r,
                "daz_cytube_outbound_queued",
                "Requests waiting in the governor",
                &["room"],
            ),
        })
    }

    /// The inbound counter of one room (looked up once, bumped per event).
    pub fn inbound_for(&self, room: &str) -> IntCounter {
        self.inbound.with_label_values(&[room])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_register_and_render() {
        let m = Metrics::new();
        let c = CytubeMetrics::new(&m);
        c.inbound_for("lobby").inc();
        c.failed
            .with_label_values(&["lobby", "ex", "cooldown"])
            .inc();
        c.delay.with_label_values(&["lobby"]).observe(0.01);
        let text = m.render();
        assert!(text.contains(r#"daz_cytube_inbound_events_total{room="lobby"} 1"#));
        assert!(
            text.contains(
                r#"daz_cytube_outbound_failed_total{code="cooldown",plugin="ex",room="lobby"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("daz_cytube_outbound_delay_seconds_bucket"));
    }
}
