//! The running host: bus, metrics, plugins, watcher, HTTP, Cytube rooms — started in
//! order (rooms last, so plugins are listening before the first event), stopped in the
//! reverse order with a deadline (rooms first, so no event arrives for a stopped plugin
//! and held requests are reported while their plugins still run).

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use daz_bus::Bus;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    cytube::{RoomRegistry, Rooms},
    http,
    metrics::{Metrics, MetricsObserver},
    plugins::{
        PluginManager, Trigger,
        host_api::{HostServices, NoRooms, RoomDirectory},
        watcher,
    },
};

/// Options that do not come from `plugins.toml`.
#[derive(Default)]
pub struct StartOptions {
    /// Where the configuration was read from (watched for changes).
    pub config_path: Option<PathBuf>,
    /// Room state for plugins, replacing the host's own Cytube rooms as the directory
    /// (tests with a fake directory).
    pub rooms: Option<Arc<dyn RoomDirectory>>,
}

/// A started host.
pub struct App {
    /// The bus.
    pub bus: Bus,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Plugins.
    pub plugins: Arc<PluginManager>,
    /// Where HTTP listens, if enabled.
    pub http_addr: Option<SocketAddr>,
    /// The Cytube rooms' state and status.
    pub room_registry: Arc<RoomRegistry>,
    rooms: Option<Rooms>,
    stop: CancellationToken,
    http_task: Option<tokio::task::JoinHandle<()>>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
    _watcher: Option<watcher::Watcher>,
    /// The control plane's mailbox (closed at shutdown to end its thread).
    control: Arc<daz_bus::Mailbox>,
    shutdown_timeout: Duration,
}

impl App {
    /// Starts the host from a configuration. Plugins that fail to load are reported and
    /// skipped; the host starts anyway (`/health/ready` says it is not ready).
    pub async fn start(config: Config, opts: StartOptions) -> anyhow::Result<App> {
        let metrics = Metrics::new();
        let bus = Bus::with_observer(Arc::new(MetricsObserver(metrics.clone())));
        let room_registry = RoomRegistry::new();
        let rooms: Arc<dyn RoomDirectory> = match opts.rooms {
            Some(r) => r,
            None if config.rooms.is_empty() => Arc::new(NoRooms),
            None => room_registry.clone(),
        };
        let room_configs = config.rooms.clone();
        let services = HostServices::new(
            bus.clone(),
            metrics.clone(),
            tokio::runtime::Handle::current(),
            rooms,
        );
        let shutdown_timeout = Duration::from_millis(config.host.shutdown_timeout_ms);
        let plugins = PluginManager::new(services, Config::default());
        let stop = CancellationToken::new();
        // Before any plugin starts, so plugins can ask the host about plugins from `create`.
        let control = crate::plugins::control::start(plugins.clone(), crate::now_ms())?;

        let (http_addr, http_task) = if config.http.enabled {
            let state = http::HttpState {
                metrics: metrics.clone(),
                plugins: plugins.clone(),
                rooms: room_registry.clone(),
                started_ms: crate::now_ms(),
            };
            let (addr, task) = http::serve(config.http.listen, state, stop.clone()).await?;
            (Some(addr), Some(task))
        } else {
            (None, None)
        };

        let total = config.plugins.values().filter(|p| p.enabled).count();
        tracing::info!(plugins = total, "loading plugins");
        let manager = plugins.clone();
        let watch = config.host.watch;
        let debounce = Duration::from_millis(config.host.debounce_ms);
        let results =
            tokio::task::spawn_blocking(move || manager.apply(config, Trigger::Startup)).await?;
        for (i, (name, r)) in results.iter().enumerate() {
            match r {
                Ok(_) => {
                    tracing::info!(plugin = %name, progress = %format!("{}/{total}", i + 1), "plugin ready")
                }
                Err(e) => {
                    tracing::error!(plugin = %name, progress = %format!("{}/{total}", i + 1), error = %e, "plugin failed to load; the host goes on without it")
                }
            }
        }

        let watcher = if watch {
            match watcher::start(plugins.clone(), opts.config_path.clone(), debounce) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch for changes; hot reload works only through explicit requests");
                    None
                }
            }
        } else {
            None
        };

        let manager = plugins.clone();
        let token = stop.clone();
        let watchdog = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => manager.check_stuck(),
                }
            }
        });

        let rooms = if room_configs.is_empty() {
            None
        } else {
            tracing::info!(rooms = room_configs.len(), "starting Cytube rooms");
            Some(Rooms::start(
                &room_configs,
                &bus,
                &metrics,
                room_registry.clone(),
            )?)
        };

        Ok(App {
            bus,
            metrics,
            plugins,
            http_addr,
            room_registry,
            rooms,
            stop,
            http_task,
            watchdog: Some(watchdog),
            _watcher: watcher,
            control,
            shutdown_timeout,
        })
    }

    /// Stops everything: rooms, watcher, plugins (each gets `shutdown`), HTTP.
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down");
        if let Some(rooms) = self.rooms.take() {
            rooms.stop(self.shutdown_timeout).await;
        }
        self._watcher = None;
        self.control.close();
        let manager = self.plugins.clone();
        let timeout = self.shutdown_timeout;
        let _ = tokio::task::spawn_blocking(move || manager.stop_all(timeout)).await;
        self.stop.cancel();
        if let Some(t) = self.watchdog.take() {
            let _ = t.await;
        }
        if let Some(t) = self.http_task.take() {
            let _ = tokio::time::timeout(timeout, t).await;
        }
        tracing::info!("stopped");
    }
}
