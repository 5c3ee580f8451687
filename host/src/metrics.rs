//! The host's Prometheus registry and metric families.
//!
//! Names follow `daz_<subsystem>_<name>_<unit>`, counters end in `_total`, and labels are
//! bounded: plugin names, subject prefixes (the first two tokens), priorities, results.
//! Plugins register their own metrics through the host (`daz_plugin_<name>`), always
//! labelled with the plugin.

use std::{collections::HashMap, sync::Arc};

use parking_lot::{Mutex, RwLock};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder, core::Collector,
};

use daz_bus::{BusObserver, Dropped};

/// Every metric the host itself exports.
pub struct Metrics {
    registry: Registry,
    /// Events published, by subject prefix.
    pub bus_published: IntCounterVec,
    /// Events a plugin's worker took from its mailbox and handled, by plugin.
    pub bus_delivered: IntCounterVec,
    /// Deliveries dropped because a mailbox was full, by plugin, prefix, priority.
    pub bus_dropped: IntCounterVec,
    /// Replies that arrived after their request timed out.
    pub bus_late_replies: IntCounter,
    /// Events waiting in a plugin's mailbox.
    pub mailbox_depth: IntGaugeVec,
    /// Time spent in `on_event`, by plugin.
    pub handler_duration: HistogramVec,
    /// Panics caught in plugins, by plugin.
    pub panics: IntCounterVec,
    /// Errors returned by plugins, by plugin.
    pub errors: IntCounterVec,
    /// Reload attempts by plugin and result (`swapped`, `unchanged`, `rejected`, `failed`).
    pub reloads: IntCounterVec,
    /// Automatic rollbacks after a failed probation, by plugin.
    pub rollbacks: IntCounterVec,
    /// Changes of `plugins.toml` (file watch or SIGHUP) by result: `applied`, or
    /// `refused` (invalid; the running configuration stays in force).
    pub config_reloads: IntCounterVec,
    /// 1 while a plugin is quarantined.
    pub quarantined: IntGaugeVec,
    /// 1 while a plugin's handler is past its deadline.
    pub stuck: IntGaugeVec,
    /// Superseded plugin libraries kept mapped.
    pub leaked_libraries: IntGauge,
    /// Their size on disk.
    pub leaked_bytes: IntGauge,
    /// Duration of a whole swap (file read to new version serving).
    pub swap_duration: Histogram,
    plugin_metrics: Mutex<HashMap<String, PluginMetric>>,
    prefix_cache: RwLock<HashMap<Box<str>, IntCounter>>,
}

#[derive(Clone)]
enum PluginMetric {
    Counter(prometheus::CounterVec, Vec<String>),
    Gauge(prometheus::GaugeVec, Vec<String>),
    Histogram(HistogramVec, Vec<String>),
}

/// Why a plugin's metric update was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MetricError(pub String);

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    // Registration only fails for duplicate or malformed names, which are constants here.
    if let Err(e) = registry.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

/// The subject prefix used as a label: the first two tokens.
pub fn subject_prefix(subject: &str) -> &str {
    match subject.match_indices('.').nth(1) {
        Some((i, _)) => &subject[..i],
        None => subject,
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Arc<Self> {
        let r = Registry::new();
        let handler_buckets = vec![
            1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0,
        ];
        Arc::new(Self {
            bus_published: counter_vec(
                &r,
                "daz_bus_published_total",
                "Events published, by subject prefix",
                &["prefix"],
            ),
            bus_delivered: counter_vec(
                &r,
                "daz_bus_delivered_total",
                "Events handed to a plugin's handler",
                &["plugin"],
            ),
            bus_dropped: counter_vec(
                &r,
                "daz_bus_dropped_total",
                "Deliveries dropped because a mailbox was full",
                &["plugin", "prefix", "priority"],
            ),
            bus_late_replies: register(
                &r,
                IntCounter::new(
                    "daz_bus_late_replies_total",
                    "Replies that arrived after the request timed out",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            mailbox_depth: gauge_vec(
                &r,
                "daz_plugin_mailbox_depth",
                "Events waiting in a plugin's mailbox",
                &["plugin"],
            ),
            handler_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "daz_plugin_handler_duration_seconds",
                        "Time spent in a plugin's on_event",
                    )
                    .buckets(handler_buckets),
                    &["plugin"],
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            panics: counter_vec(
                &r,
                "daz_plugin_panics_total",
                "Panics caught in plugins",
                &["plugin"],
            ),
            errors: counter_vec(
                &r,
                "daz_plugin_errors_total",
                "Errors returned by plugins",
                &["plugin"],
            ),
            reloads: counter_vec(
                &r,
                "daz_plugin_reloads_total",
                "Reload attempts by result",
                &["plugin", "result"],
            ),
            config_reloads: counter_vec(
                &r,
                "daz_host_config_reloads_total",
                "Changes of plugins.toml read, by result (applied, refused)",
                &["result"],
            ),
            rollbacks: counter_vec(
                &r,
                "daz_plugin_rollbacks_total",
                "Automatic rollbacks after a failed probation",
                &["plugin"],
            ),
            quarantined: gauge_vec(
                &r,
                "daz_plugin_quarantined",
                "1 while the plugin is quarantined",
                &["plugin"],
            ),
            stuck: gauge_vec(
                &r,
                "daz_plugin_stuck",
                "1 while the plugin's handler is past its deadline",
                &["plugin"],
            ),
            leaked_libraries: register(
                &r,
                IntGauge::new(
                    "daz_plugin_leaked_libraries",
                    "Superseded plugin libraries kept mapped",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            leaked_bytes: register(
                &r,
                IntGauge::new(
                    "daz_plugin_leaked_bytes",
                    "Size of the superseded plugin libraries kept mapped",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            swap_duration: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "daz_plugin_swap_duration_seconds",
                        "Time from reading a new plugin file to the new version serving",
                    )
                    .buckets(vec![
                        1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.5, 1.0,
                    ]),
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            plugin_metrics: Mutex::new(HashMap::new()),
            prefix_cache: RwLock::new(HashMap::new()),
            registry: r,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// The registry (for components that register their own families).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Applies a plugin's metric update to `daz_plugin_<name>{plugin, labels…}`.
    pub fn plugin_metric(
        &self,
        plugin: &str,
        kind: u8,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<(), MetricError> {
        use daz_plugin_abi::{
            METRIC_COUNTER_ADD, METRIC_GAUGE_ADD, METRIC_GAUGE_SET, METRIC_HISTOGRAM_OBSERVE,
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !s.as_bytes()[0].is_ascii_digit()
        };
        if !valid(name) || labels.iter().any(|(k, _)| !valid(k) || *k == "plugin") {
            return Err(MetricError(format!(
                "metric {name:?} with labels {:?}: names are [a-zA-Z_][a-zA-Z0-9_]* and `plugin` is reserved",
                labels.iter().map(|(k, _)| *k).collect::<Vec<_>>()
            )));
        }
        let full = format!("daz_plugin_{name}");
        let label_names: Vec<String> = std::iter::once("plugin".to_owned())
            .chain(labels.iter().map(|(k, _)| (*k).to_owned()))
            .collect();
        let mut values: Vec<&str> = vec![plugin];
        values.extend(labels.iter().map(|(_, v)| *v));
        let help = if help.is_empty() { name } else { help };

        let mut map = self.plugin_metrics.lock();
        let metric = match map.get(&full) {
            Some(m) => m.clone(),
            None => {
                let names: Vec<&str> = label_names.iter().map(String::as_str).collect();
                let opts = Opts::new(full.clone(), help);
                let created = match kind {
                    METRIC_COUNTER_ADD => prometheus::CounterVec::new(opts, &names)
                        .map(|c| PluginMetric::Counter(c, label_names.clone())),
                    METRIC_GAUGE_SET | METRIC_GAUGE_ADD => prometheus::GaugeVec::new(opts, &names)
                        .map(|g| PluginMetric::Gauge(g, label_names.clone())),
                    METRIC_HISTOGRAM_OBSERVE => {
                        HistogramVec::new(HistogramOpts::new(full.clone(), help), &names)
                            .map(|h| PluginMetric::Histogram(h, label_names.clone()))
                    }
                    other => return Err(MetricError(format!("unknown metric operation {other}"))),
                }
                .map_err(|e| MetricError(format!("metric {full}: {e}")))?;
                let collector: Box<dyn Collector> = match &created {
                    PluginMetric::Counter(c, _) => Box::new(c.clone()),
                    PluginMetric::Gauge(g, _) => Box::new(g.clone()),
                    PluginMetric::Histogram(h, _) => Box::new(h.clone()),
                };
                self.registry
                    .register(collector)
                    .map_err(|e| MetricError(format!("metric {full}: {e}")))?;
                map.insert(full.clone(), created.clone());
                created
            }
        };
        drop(map);
        let mismatch = |known: &Vec<String>| {
            MetricError(format!(
                "metric {full} was registered with labels {known:?}; this update has {label_names:?}"
            ))
        };
        match (metric, kind) {
            (PluginMetric::Counter(c, known), METRIC_COUNTER_ADD) => {
                if known != label_names {
                    return Err(mismatch(&known));
                }
                if value < 0.0 || !value.is_finite() {
                    return Err(MetricError(format!(
                        "counter {full} cannot go down ({value})"
                    )));
                }
                c.with_label_values(&values).inc_by(value);
            }
            (PluginMetric::Gauge(g, known), METRIC_GAUGE_SET) => {
                if known != label_names {
                    return Err(mismatch(&known));
                }
                g.with_label_values(&values).set(value);
            }
            (PluginMetric::Gauge(g, known), METRIC_GAUGE_ADD) => {
                if known != label_names {
                    return Err(mismatch(&known));
                }
                g.with_label_values(&values).add(value);
            }
            (PluginMetric::Histogram(h, known), METRIC_HISTOGRAM_OBSERVE) => {
                if known != label_names {
                    return Err(mismatch(&known));
                }
                h.with_label_values(&values).observe(value);
            }
            _ => {
                return Err(MetricError(format!(
                    "metric {full} already exists with another type"
                )));
            }
        }
        Ok(())
    }

    fn published_counter(&self, prefix: &str) -> IntCounter {
        if let Some(c) = self.prefix_cache.read().get(prefix) {
            return c.clone();
        }
        let c = self.bus_published.with_label_values(&[prefix]);
        self.prefix_cache.write().insert(prefix.into(), c.clone());
        c
    }
}

/// Feeds bus events into the metrics.
pub struct MetricsObserver(pub Arc<Metrics>);

impl BusObserver for MetricsObserver {
    fn published(&self, subject: &str) {
        self.0.published_counter(subject_prefix(subject)).inc();
    }

    fn dropped(&self, d: &Dropped) {
        self.0
            .bus_dropped
            .with_label_values(&[&*d.mailbox, subject_prefix(&d.subject), d.priority.as_str()])
            .inc();
    }

    fn late_reply(&self, _reply_to: &str) {
        self.0.bus_late_replies.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_first_two_tokens() {
        assert_eq!(subject_prefix("cytube.in.room.chatMsg"), "cytube.in");
        assert_eq!(subject_prefix("test.seq"), "test.seq");
        assert_eq!(subject_prefix("single"), "single");
    }

    #[test]
    fn plugin_metrics_are_registered_labelled_and_checked() {
        let m = Metrics::new();
        m.plugin_metric("ex", 0, "greetings_total", "g", &[("room", "a")], 2.0)
            .unwrap();
        let text = m.render();
        assert!(
            text.contains(r#"daz_plugin_greetings_total{plugin="ex",room="a"} 2"#),
            "{text}"
        );
        let err = m
            .plugin_metric("ex", 0, "greetings_total", "g", &[], 1.0)
            .unwrap_err();
        assert!(err.0.contains("registered with labels"), "{err}");
        assert!(m.plugin_metric("ex", 0, "bad-name", "", &[], 1.0).is_err());
        assert!(
            m.plugin_metric("ex", 1, "greetings_total", "", &[("room", "a")], 1.0)
                .is_err()
        );
    }
}
