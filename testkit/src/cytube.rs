//! Tests of the host against the Cytube simulator: a simulator on port 0 plus a real
//! host whose `[[rooms]]` point at it ([`Rig`]), the `[[rooms]]` tables for it, bus
//! probes with async waits, and room-state waits. Every wait is on a condition with a
//! timeout, never a sleep.

use std::{sync::Arc, time::Duration};

use daz_bus::{Envelope, Mailbox, MailboxConfig, Priority};
use daz_cytube_sim::{Account, Actor, SimConfig, SimHandle, Simulator};
use daz_host::{
    app::{App, StartOptions},
    config::Config,
    cytube::{ConnState, RoomShared},
};

use crate::{TestHost, deploy, host_dir, wait};

/// Default wait for anything the host and the simulator do between them.
pub const T: Duration = Duration::from_secs(20);

/// A simulator and a host connected to it.
pub struct Rig {
    pub sim: SimHandle,
    pub host: TestHost,
    pub dir: tempfile::TempDir,
}

/// A `[[rooms]]` table for the simulator: `name`, `channel`, top-level `keys`, then
/// sub-tables in `sections`. Reconnects are fast and the connect budget generous unless
/// `sections` has its own `[rooms.reconnect]`.
pub fn room_table(
    sim: &SimHandle,
    name: &str,
    channel: &str,
    keys: &str,
    sections: &str,
) -> String {
    let reconnect = if sections.contains("[rooms.reconnect]") {
        ""
    } else {
        "[rooms.reconnect]\ninitial_delay_ms = 50\nmax_delay_ms = 400\nconnect_timeout_ms = 5000\nconnect_burst = 1000\nconnect_refill_ms = 10\n"
    };
    format!(
        "\n[[rooms]]\nname = \"{name}\"\nsite = \"{}\"\nchannel = \"{channel}\"\n{keys}\n{reconnect}{sections}\n",
        sim.base_url()
    )
}

/// A `[[rooms]]` table like [`room_table`] for a room that logs in as account `user`,
/// its password `pw` in a file in `dir`.
pub fn account_room(
    sim: &SimHandle,
    dir: &std::path::Path,
    name: &str,
    channel: &str,
    (user, pw): (&str, &str),
    sections: &str,
) -> String {
    room_table(
        sim,
        name,
        channel,
        &format!(
            "username = \"{user}\"\npassword_file = {}",
            password_file(dir, &format!("{name}-{user}.pw"), pw)
        ),
        sections,
    )
}

/// The bot's account in [`Rig::logged_in`]: `testbot`, password `pw1`.
pub const BOT: (&str, &str) = ("testbot", "pw1");

/// The room most tests use: `main` on channel `botchan`, logged in as `testbot` with
/// password `pw`.
pub fn bot_room(sim: &SimHandle, dir: &std::path::Path, pw: &str, sections: &str) -> String {
    account_room(sim, dir, "main", "botchan", ("testbot", pw), sections)
}

impl Rig {
    /// Starts a simulator with `sim_cfg`, then a host with the rooms `rooms(&sim, dir)`
    /// returns (it may write password files into `dir`).
    pub async fn start(
        sim_cfg: SimConfig,
        rooms: impl FnOnce(&SimHandle, &std::path::Path) -> String,
    ) -> Rig {
        let sim = Simulator::start(sim_cfg).await.expect("simulator starts");
        Rig::on(sim, rooms).await
    }

    /// Starts a host against a simulator already running.
    pub async fn on(
        sim: SimHandle,
        rooms: impl FnOnce(&SimHandle, &std::path::Path) -> String,
    ) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!("{}{}", crate::host_table(""), rooms(&sim, dir.path()));
        let host = TestHost::start(&config, &[]).await;
        Rig { sim, host, dir }
    }

    /// The usual rig: a simulator `sim_cfg` that also knows the bot's account [`BOT`],
    /// and a host with room `main` on `botchan` ([`bot_room`] with `sections`); returns
    /// once the bot is logged in.
    pub async fn logged_in(mut sim_cfg: SimConfig, sections: &str) -> Rig {
        sim_cfg.accounts.insert(0, Account::new(BOT.0, BOT.1));
        let rig = Rig::start(sim_cfg, |sim, dir| bot_room(sim, dir, BOT.1, sections)).await;
        rig.wait_state("main", ConnState::LoggedIn).await;
        rig
    }

    /// A simulated user connected and logged in to `channel` (`pw` `None` for a guest).
    pub async fn user(&self, channel: &str, name: &str, pw: Option<&str>) -> Actor {
        let mut actor = self
            .sim
            .actor(name)
            .await
            .connect()
            .await
            .expect("user connects");
        actor
            .join_and_login(channel, name, pw)
            .await
            .expect("user joins and logs in");
        actor
    }

    /// The room's shared state.
    pub fn room(&self, name: &str) -> Arc<RoomShared> {
        self.host
            .app
            .room_registry
            .get(name)
            .expect("room is configured")
    }

    /// Waits until the room reaches `state`.
    pub async fn wait_state(&self, name: &str, state: ConnState) {
        let room = self.room(name);
        wait(T, &format!("room {name} to be {state:?}"), || {
            room.conn_state() == state
        })
        .await;
    }

    /// A probe subscribed to `patterns`.
    pub fn probe(&self, name: &str, patterns: &[&str]) -> Probe {
        let mailbox = Mailbox::new(name, MailboxConfig::new(1_000_000));
        let id = self
            .host
            .app
            .bus
            .register(name, mailbox.clone())
            .expect("register probe");
        for p in patterns {
            self.host.app.bus.subscribe(id, p).expect("subscribe");
        }
        Probe { mailbox }
    }

    /// Publishes a client→server request as plugin `source`.
    pub fn request(&self, source: &str, room: &str, event: &str, payload: serde_json::Value) {
        self.request_with(source, room, event, payload, Priority::Normal);
    }

    /// Same with a priority.
    pub fn request_with(
        &self,
        source: &str,
        room: &str,
        event: &str,
        payload: serde_json::Value,
        priority: Priority,
    ) {
        let env = Envelope::builder(
            format!("cytube.out.{room}.{event}"),
            serde_json::to_vec(&payload).expect("json"),
        )
        .source(source)
        .room(room)
        .priority(priority)
        .build()
        .expect("valid subject");
        self.host.app.bus.publish(env).expect("publish");
    }

    /// `GET` on the host's HTTP server, as JSON.
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (code, body) = self.host.get(path).await;
        (
            code,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        )
    }
}

/// A bus subscriber for tests, with async waits.
pub struct Probe {
    pub mailbox: Arc<Mailbox>,
}

impl Probe {
    /// The next event matching `pred` (others are discarded), or panic after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Envelope) -> bool,
    ) -> Arc<Envelope> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.mailbox.recv()).await {
                Ok(Some(env)) if pred(&env) => return env,
                Ok(Some(_)) => {}
                Ok(None) => panic!("probe closed while waiting for {what}"),
                Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
            }
        }
    }

    /// The next event on `subject`.
    pub async fn wait_subject(&self, subject: &str) -> Arc<Envelope> {
        self.wait_for(T, subject, |e| &*e.subject == subject).await
    }

    /// Everything queued right now.
    pub fn drain(&self) -> Vec<Arc<Envelope>> {
        let mut out = Vec::new();
        self.mailbox.drain_into(&mut out, usize::MAX);
        out
    }
}

/// An envelope's payload as JSON.
pub fn json(env: &Envelope) -> serde_json::Value {
    serde_json::from_slice(&env.payload).expect("json payload")
}

/// Writes a password file (mode 0600) and returns its path as a TOML string.
pub fn password_file(dir: &std::path::Path, name: &str, pw: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{pw}\n")).expect("write password");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    format!("{:?}", path.display().to_string())
}

/// The room of [`bench_host`].
pub const BENCH_ROOM: &str = "bench";
/// The account [`bench_host`] logs in with: the server must know it.
pub const BENCH_BOT: (&str, &str) = ("bot", "bot-pass");

/// A host for the benches, as lean as production runs it: no HTTP server, no watcher,
/// no preflight; one room [`BENCH_ROOM`] on `site`'s `channel`, logged in as
/// [`BENCH_BOT`], its `[rooms.outbound]` keys `outbound`; `plugins` (name, built
/// library) deployed and loaded. Returns once the room is logged in, with the host's
/// directory (keep it while the host runs).
pub async fn bench_host(
    site: &str,
    channel: &str,
    outbound: &str,
    plugins: &[(&str, &std::path::Path)],
) -> (App, tempfile::TempDir) {
    let dir = host_dir();
    let mut tables = String::new();
    for (name, lib) in plugins {
        deploy(lib, &dir.path().join("plugins"), &format!("{name}.so"));
        tables.push_str(&format!("[plugins.{name}]\nfile = \"{name}.so\"\n"));
    }
    let (user, pw) = BENCH_BOT;
    let config = format!(
        "[host]\nplugin_dir = \"plugins\"\nruntime_dir = \"runtime\"\npreflight = false\nwatch = false\n\
         [http]\nenabled = false\n{tables}\
         [[rooms]]\nname = \"{BENCH_ROOM}\"\nsite = \"{site}\"\nchannel = \"{channel}\"\n\
         username = \"{user}\"\npassword_file = {}\n[rooms.outbound]\n{outbound}\n",
        password_file(dir.path(), "pw", pw)
    );
    let path = dir.path().join("plugins.toml");
    std::fs::write(&path, config).expect("write config");
    let app = App::start(
        Config::load(&path).expect("valid bench config"),
        StartOptions::default(),
    )
    .await
    .expect("host starts");
    let room = app
        .room_registry
        .get(BENCH_ROOM)
        .expect("room is configured");
    wait(T, "the bot to log in", || {
        room.conn_state() == ConnState::LoggedIn
    })
    .await;
    (app, dir)
}
