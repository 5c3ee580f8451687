//! PostgreSQL for tests and the soak: a private server (initdb in a temporary directory,
//! a port of its own) that may be stopped and started without touching the shared server
//! on 127.0.0.1:5432, and control of the shared server's cluster (`pg_ctlcluster`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, bail};

/// A private PostgreSQL server; stopped (immediately) and deleted on drop.
pub struct PrivatePg {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

/// The newest PostgreSQL's binaries under `/usr/lib/postgresql`.
fn pg_bin() -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("listing {}: is PostgreSQL installed?", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    let newest = versions
        .pop()
        .with_context(|| format!("no PostgreSQL version under {}", root.display()))?;
    Ok(newest.join("bin"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command as the `postgres` user when we are root (initdb refuses root).
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn check(what: &str, out: std::io::Result<Output>) -> anyhow::Result<()> {
    let out = out.with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl PrivatePg {
    /// Creates and starts a server; panics if that fails (for tests).
    pub fn start() -> PrivatePg {
        PrivatePg::try_start().expect("a private PostgreSQL server starts")
    }

    /// Creates and starts a server (trust auth for `postgres`, fsync off).
    pub fn try_start() -> anyhow::Result<PrivatePg> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        if is_root() {
            check(
                "chown of the private PostgreSQL directory",
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path())
                    .output(),
            )?;
        }
        let bin = pg_bin()?;
        check(
            "initdb",
            as_pg_user(&bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(dir.path().join("data"))
                .output(),
        )?;
        let pg = PrivatePg {
            dir,
            port: free_port()?,
            bin,
        };
        pg.try_up()?;
        Ok(pg)
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections; panics on failure.
    pub fn up(&self) {
        self.try_up().expect("pg_ctl start");
    }

    /// Starts the server and waits until it accepts connections.
    pub fn try_up(&self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        check(
            "pg_ctl start",
            as_pg_user(&self.bin.join("pg_ctl"))
                .args(["-w", "-t", "60", "-D"])
                .arg(self.dir.path().join("data"))
                .args(["-o", &opts, "-l"])
                .arg(self.dir.path().join("log"))
                .arg("start")
                .output(),
        )
    }

    /// Stops the server at once (`immediate`: connections are cut mid-statement);
    /// panics on failure.
    pub fn down(&self) {
        self.try_down().expect("pg_ctl stop");
    }

    /// Stops the server at once.
    pub fn try_down(&self) -> anyhow::Result<()> {
        check(
            "pg_ctl stop",
            as_pg_user(&self.bin.join("pg_ctl"))
                .args(["-w", "-m", "immediate", "-D"])
                .arg(self.dir.path().join("data"))
                .arg("stop")
                .output(),
        )
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.try_down();
    }
}

/// The shared server's cluster (`/etc/postgresql/<version>/main`), stopped and started
/// with `pg_ctlcluster --skip-systemctl-redirect`.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub version: String,
}

impl Cluster {
    /// The first cluster version under `/etc/postgresql`.
    pub fn find() -> anyhow::Result<Cluster> {
        let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
            .context("listing /etc/postgresql: is the PostgreSQL server package installed?")?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        versions.sort();
        let version = versions
            .into_iter()
            .next()
            .context("no cluster under /etc/postgresql")?;
        Ok(Cluster { version })
    }

    /// `pg_ctlcluster <version> main <action>` (`stop`, `start`, `restart`).
    pub fn ctl(&self, action: &str) -> anyhow::Result<()> {
        check(
            &format!("pg_ctlcluster {} main {action}", self.version),
            Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", &self.version, "main", action])
                .output(),
        )
    }
}
