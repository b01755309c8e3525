//! `make fleet`: a fleet, not a process. Many instances of each database
//! function (sso-login and conversations), each a process with a pool of
//! one connection as on Lambda, all started at once, share one PostgreSQL
//! with a small `max_connections`, one Redis and one identity provider's
//! JWKS, under a mixed load (logins, lists, creates). Run twice: connected
//! directly, then through a PgBouncer in transaction mode
//! (`DATABASE_POOLER=transaction`). Prints one table; exits non-zero when
//! an outcome breaks the rules:
//! - directly, requests beyond the connection budget get a fast 503 with
//!   `Retry-After`: never a 500, never a hang;
//! - through the pooler, every request succeeds;
//! - each instance fetches the JWKS at most once (its secrets, read from
//!   the environment here, are read once at start by construction).
//!
//! FLEET_INSTANCES (per function, default 50), FLEET_SECONDS (of load,
//! default 10), FLEET_MAX_CONNECTIONS (the server's, default 30),
//! FLEET_CLIENTS (requests at once, default 100).
//!
//! The modules: `instances` (the fleet, started at once), `load` (the
//! clients' requests), `figures` (what a run saw, its rules, the table).

#![warn(clippy::too_many_lines)]

mod figures;
mod instances;
mod load;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use loadtest::env_number;
use loadtest::key_server::KeyServer;
use sqlx::Connection;
use testkit::services::{PgBouncer, PgServer, RedisServer};

use crate::figures::{Figures, print_table};

const JWT_SECRET: &str = "fleet-api-token-key-of-at-least-32-bytes!";
/// Users the load acts as (created before the fleet starts).
const USERS: i64 = 200;
/// A request without an answer by then is a hang.
const HANG: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Pooled,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Pooled => "PgBouncer (transaction)",
        }
    }
}

struct Settings {
    instances: usize,
    seconds: u64,
    max_connections: u32,
    clients: usize,
}

/// What both modes' runs share: the servers, the binaries, the logs.
struct Ground {
    pg: PgServer,
    redis: RedisServer,
    keys: KeyServer,
    /// The functions' binaries: beside this one's.
    bin_dir: PathBuf,
    logs: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let settings = Settings {
        instances: env_number("FLEET_INSTANCES", 50)? as usize,
        seconds: env_number("FLEET_SECONDS", 10)?,
        max_connections: env_number("FLEET_MAX_CONNECTIONS", 30)? as u32,
        clients: env_number("FLEET_CLIENTS", 100)? as usize,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let ok = runtime.block_on(run(&settings))?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

async fn run(settings: &Settings) -> anyhow::Result<bool> {
    let (ground, mut admin) = Ground::start(settings).await?;
    println!(
        "fleet: {} instances of sso-login and of conversations (pool of 1 each), PostgreSQL max_connections {}, {} clients for {} s per mode",
        settings.instances, settings.max_connections, settings.clients, settings.seconds
    );
    let mut rows = Vec::new();
    let mut ok = true;
    for mode in [Mode::Direct, Mode::Pooled] {
        // Room for the tool's own session and the superuser's reserve.
        let bouncer = (mode == Mode::Pooled).then(|| {
            PgBouncer::start(
                "127.0.0.1",
                ground.pg.port,
                "postgres",
                settings.max_connections - 5,
            )
        });
        let url = match &bouncer {
            Some(b) => b.url_for(&ground.pg.url()),
            None => ground.pg.url(),
        };
        ground.keys.fetches.store(0, Ordering::SeqCst);
        let figures = fleet(settings, mode, &url, &ground, &mut admin).await?;
        let broken = figures.broken_rules(mode, settings.instances);
        for rule in &broken {
            eprintln!("fleet ({}): {rule}", mode.name());
        }
        ok &= broken.is_empty();
        rows.push(figures);
    }
    print_table(&rows);
    println!("(instance logs: {})", ground.logs.display());
    Ok(ok)
}

impl Ground {
    /// PostgreSQL (migrated, with the load's users), Redis and the key
    /// endpoint; and the tool's own session on the database.
    async fn start(settings: &Settings) -> anyhow::Result<(Self, sqlx::PgConnection)> {
        let bin_dir = std::env::current_exe()?
            .parent()
            .context("the tool's directory")?
            .to_path_buf();
        let logs = std::env::temp_dir().join(format!("tms-fleet-{}", std::process::id()));
        std::fs::create_dir_all(&logs)?;
        let max_connections = format!("max_connections={}", settings.max_connections);
        let pg = PgServer::start_with_settings(&[&max_connections]);
        let db = shared::db::Database::open_postgres(&pg.url(), 1)?;
        db.migrate().await?;
        db.close().await;
        let mut admin = sqlx::PgConnection::connect(&pg.url()).await?;
        sqlx::query(
            "INSERT INTO users (external_id, created_at, updated_at) \
             SELECT 'fleet-seed-' || g, 0, 0 FROM generate_series(1, $1) g",
        )
        .bind(USERS)
        .execute(&mut admin)
        .await?;
        let redis = RedisServer::start();
        let keys = KeyServer::serve(&["ec1"]).await?;
        let ground = Self {
            pg,
            redis,
            keys,
            bin_dir,
            logs,
        };
        Ok((ground, admin))
    }
}

/// One mode's run: the fleet started at once, then the load for
/// `settings.seconds`, with the server's sessions sampled meanwhile.
async fn fleet(
    settings: &Settings,
    mode: Mode,
    database_url: &str,
    ground: &Ground,
    admin: &mut sqlx::PgConnection,
) -> anyhow::Result<Figures> {
    let client = reqwest::Client::builder()
        .timeout(HANG)
        .pool_max_idle_per_host(4)
        .build()?;
    let fleet = instances::Fleet::start(settings.instances, mode, database_url, ground)?;
    let mut figures = Figures::new(mode, fleet.cold_starts(&client).await);
    let targets = load::Targets::of(&fleet)?;
    let until = std::time::Instant::now() + Duration::from_secs(settings.seconds);
    let (seen, peak) = tokio::join!(
        load::clients(&client, &targets, settings.clients, until),
        load::peak_sessions(admin, until)
    );
    figures.peak_server_sessions = peak;
    for client_saw in seen? {
        figures.add(client_saw);
    }
    figures.jwks_fetches = ground.keys.fetches.load(Ordering::SeqCst);
    figures.sso_instances_used = targets.sso_instances_used();
    Ok(figures)
}
