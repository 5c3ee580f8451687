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
        host_api::{HostServices, RoomDirectory},
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
    /// The generated admin token's file (`None` when a token is configured, the API is
    /// open or HTTP is off); the CLI reads it.
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Who may use the admin API (mints one-time login URLs for the status page).
    pub access: Arc<http::auth::Access>,
    /// The Cytube rooms' state and status.
    pub room_registry: Arc<RoomRegistry>,
    rooms: Arc<tokio::sync::Mutex<Option<Rooms>>>,
    /// Applies each new `[[rooms]]` list to the rooms.
    rooms_follow: Option<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
    http_task: Option<tokio::task::JoinHandle<()>>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
    _watcher: Option<watcher::Watcher>,
    /// The control plane's mailbox (closed at shutdown to end its thread).
    control: Arc<daz_bus::Mailbox>,
    /// The admin API's subscriber (failure reports of `say`), closed at shutdown.
    admin: Option<Arc<daz_bus::Mailbox>>,
    shutdown_timeout: Duration,
}

impl App {
    /// Starts the host from a configuration. Plugins that fail to load are reported and
    /// skipped; the host starts anyway (`/health/ready` says it is not ready).
    pub async fn start(config: Config, opts: StartOptions) -> anyhow::Result<App> {
        // First: a host that must not listen the way it is configured starts nothing.
        let in_file = |e: &dyn std::fmt::Display| match &config.path {
            Some(p) => anyhow::anyhow!("{}: {e}", p.display()),
            None => anyhow::anyhow!("{e}"),
        };
        let (token, admin_token_file) = if config.http.enabled {
            use http::auth::{AdminToken, TokenSetting};
            match http::auth::resolve(&config.http, &config.host.runtime_dir, |name| {
                std::env::var(name).ok()
            })
            .map_err(|e| in_file(&e))?
            {
                TokenSetting::Configured(t) => (Some(t), None),
                TokenSetting::Generated(path) => {
                    let t = http::auth::load_or_create(&path).map_err(|e| in_file(&e))?;
                    (Some(AdminToken::new(&t)), Some(path))
                }
                TokenSetting::Open => (None, None),
            }
        } else {
            (None, None)
        };
        let access = http::auth::Access::new(token, &config.http.allowed_hosts);
        // Sockets (rooms, HTTP clients) and plugin files share one descriptor budget:
        // use all the administrator allows.
        match http::limits::raise_fd_limit() {
            Ok((old, new)) if new > old => {
                tracing::info!(old, new, "raised the open-file limit to the hard limit")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
        let metrics = Metrics::new();
        let recent = http::events::RecentEvents::new(config.http.events_buffer);
        let bus = if config.http.enabled {
            Bus::with_observer(Arc::new(http::events::RecordingObserver {
                inner: MetricsObserver(metrics.clone()),
                recent: recent.clone(),
            }))
        } else {
            Bus::with_observer(Arc::new(MetricsObserver(metrics.clone())))
        };
        let room_registry = RoomRegistry::new();
        // The registry even with no rooms yet: a configuration reload may add some.
        let rooms: Arc<dyn RoomDirectory> = match opts.rooms {
            Some(r) => r,
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

        let startup_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (http_addr, http_task, admin) = if config.http.enabled {
            let admin = http::admin::start_failure_listener(&bus)?;
            let state = http::HttpState {
                metrics: metrics.clone(),
                plugins: plugins.clone(),
                rooms: room_registry.clone(),
                bus: bus.clone(),
                events: recent,
                access: access.clone(),
                limits: http::limits::Limits::from_config(&config.http),
                streams: Arc::new(tokio::sync::Semaphore::new(config.http.max_streams)),
                stop: stop.clone(),
                started_ms: crate::now_ms(),
                startup_done: startup_done.clone(),
            };
            let (addr, task) = http::serve(config.http.listen, state, stop.clone()).await?;
            if let Some(url) = access.login_url() {
                // On the terminal, not in the log: the code opens the admin API (once).
                eprintln!("daz: status page (this link logs one browser in, once): {url}");
            }
            (Some(addr), Some(task), Some(admin))
        } else {
            (None, None, None)
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

        startup_done.store(true, std::sync::atomic::Ordering::Release);

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

        if !room_configs.is_empty() {
            tracing::info!(rooms = room_configs.len(), "starting Cytube rooms");
        }
        let rooms = Arc::new(tokio::sync::Mutex::new(Some(Rooms::start(
            &room_configs,
            &bus,
            &metrics,
            room_registry.clone(),
        )?)));
        let rooms_follow = tokio::spawn(follow_rooms(
            rooms.clone(),
            plugins.watch_config(),
            shutdown_timeout,
        ));

        Ok(App {
            bus,
            metrics,
            plugins,
            http_addr,
            admin_token_file,
            access,
            room_registry,
            rooms,
            rooms_follow: Some(rooms_follow),
            stop,
            http_task,
            watchdog: Some(watchdog),
            _watcher: watcher,
            control,
            admin,
            shutdown_timeout,
        })
    }

    /// Stops everything: rooms, watcher, plugins (each gets `shutdown`), HTTP.
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down");
        // First: no reload starts from here on (a file event or a signal arriving while
        // things stop must not load anything).
        let manager = self.plugins.clone();
        let _ = tokio::task::spawn_blocking(move || manager.begin_shutdown()).await;
        if let Some(t) = self.rooms_follow.take() {
            t.abort();
            let _ = t.await;
        }
        if let Some(rooms) = self.rooms.lock().await.take() {
            rooms.stop(self.shutdown_timeout).await;
        }
        self._watcher = None;
        self.control.close();
        if let Some(admin) = &self.admin {
            admin.close();
        }
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

/// Applies every configuration the plugin manager puts in force to the Cytube rooms
/// (added rooms start, removed ones stop, changed ones restart, the rest stay as they
/// are). An invalid file never gets here: it is refused before it is applied, and the
/// rooms keep running.
async fn follow_rooms(
    rooms: Arc<tokio::sync::Mutex<Option<Rooms>>>,
    mut configs: tokio::sync::watch::Receiver<Arc<Config>>,
    stop_timeout: Duration,
) {
    while configs.changed().await.is_ok() {
        let wanted = configs.borrow_and_update().rooms.clone();
        let mut guard = rooms.lock().await;
        let Some(rooms) = guard.as_mut() else { return };
        let changes = rooms.apply(&wanted, stop_timeout).await;
        if !changes.is_empty() {
            tracing::info!(added = ?changes.added, removed = ?changes.removed, restarted = ?changes.restarted, "rooms follow the configuration");
        }
    }
}
