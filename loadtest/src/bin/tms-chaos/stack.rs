//! What a chaos run starts, all its own on 127.0.0.1 and free ports: a
//! durable Redis, its replica, the relays in front of them, a PostgreSQL
//! with the load's users, the identity provider's key endpoint, and the
//! functions.

use std::path::Path;
use std::time::Duration;

use loadtest::function_process::FunctionProcess;
use loadtest::key_server::KeyServer;
use testkit::relay::Relay;
use testkit::services::{PgServer, RedisServer};

use crate::{JWT_SECRET, REDIS_KEY_PREFIX};

/// Users the load lists and creates conversations as.
const USERS: usize = 8;
const SSO_INSTANCES: usize = 2;

pub struct Stack {
    // The functions first: killed (dropped) before the servers they use.
    /// The sso-login instances, sharing Redis and PostgreSQL.
    pub sso: Vec<FunctionProcess>,
    pub health: FunctionProcess,
    pub conversations: FunctionProcess,
    pub keys: KeyServer,
    pub redis: RedisServer,
    /// Redis's replica, until the failover promotes it.
    pub replica: Option<RedisServer>,
    /// The replica's link to the primary: it can go silent (a replica
    /// that lags).
    pub replication: Relay,
    /// Where the functions reach Redis: a failover moves it to the replica
    /// (as ElastiCache's primary endpoint does).
    pub endpoint: Relay,
    pub pg: PgServer,
    pub user_ids: Vec<i64>,
}

impl Stack {
    /// Starts the servers, then the functions (`bin_dir`, their logs in
    /// `logs`), and waits until each function serves.
    pub async fn start(bin_dir: &Path, logs: &Path) -> anyhow::Result<Self> {
        let redis = tokio::task::spawn_blocking(RedisServer::start_durable).await?;
        // Its replica, for the failover: it replicates through a relay whose
        // primary side can go silent (a replica that lags), and the functions
        // reach Redis through an endpoint that a failover moves to the replica
        // (as ElastiCache's primary endpoint does).
        let replication = Relay::start(redis.port).await;
        let replica_of = [
            "--replicaof".to_owned(),
            "127.0.0.1".into(),
            replication.port.to_string(),
        ];
        let replica = tokio::task::spawn_blocking(move || {
            RedisServer::start_with_settings(
                &replica_of.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
        .await?;
        let endpoint = Relay::start(redis.port).await;
        let pg = tokio::task::spawn_blocking(PgServer::start).await?;
        let user_ids = users(&pg).await?;
        let keys = KeyServer::serve(&["rsa1", "ec1"]).await?;
        let (sso, health, conversations) = start_functions(bin_dir, logs, &pg, &endpoint, &keys)?;
        for f in sso.iter().chain([&health, &conversations]) {
            wait_serving(f).await?;
        }
        Ok(Self {
            sso,
            health,
            conversations,
            keys,
            redis,
            replica: Some(replica),
            replication,
            endpoint,
            pg,
            user_ids,
        })
    }
}

/// The database migrated, with the load's users: their ids.
async fn users(pg: &PgServer) -> anyhow::Result<Vec<i64>> {
    let db = shared::db::Database::open_postgres(&pg.url(), 2)?;
    db.migrate().await?;
    let mut user_ids = Vec::new();
    for i in 0..USERS {
        let user =
            sso_login::users::upsert_user(&db, &format!("chaos-member-{i}"), None, None).await?;
        user_ids.push(user.id);
    }
    db.close().await;
    Ok(user_ids)
}

/// The sso-login instances (verifying with the JWKS, as production does),
/// health and conversations.
fn start_functions(
    bin_dir: &Path,
    logs: &Path,
    pg: &PgServer,
    endpoint: &Relay,
    keys: &KeyServer,
) -> anyhow::Result<(Vec<FunctionProcess>, FunctionProcess, FunctionProcess)> {
    let common = [
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        ("ALLOWED_HOSTS", "127.0.0.1,localhost".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("DATABASE_URL", pg.url()),
    ];
    let with_redis = [
        ("REDIS_URL", format!("redis://127.0.0.1:{}", endpoint.port)),
        ("REDIS_KEY_PREFIX", REDIS_KEY_PREFIX.to_owned()),
    ];
    let start = |name: &str, instance: usize, vars: Vec<(&str, String)>| {
        FunctionProcess::start(
            bin_dir.join(name),
            vars,
            logs.join(format!("{name}-{instance}.log")),
        )
    };
    let mut sso = Vec::new();
    for i in 0..SSO_INSTANCES {
        let mut vars = common.to_vec();
        vars.extend(with_redis.iter().cloned());
        vars.push(("SSO_JWKS_URL", keys.url.clone()));
        sso.push(start("sso-login", i, vars)?);
    }
    let mut health_vars = common.to_vec();
    health_vars.extend(with_redis.iter().cloned());
    let health = start("health", 0, health_vars)?;
    let conversations = start("conversations", 0, common.to_vec())?;
    Ok((sso, health, conversations))
}

/// Until `function` answers HTTP, for 20 s at most.
pub async fn wait_serving(function: &FunctionProcess) -> anyhow::Result<()> {
    let client = crate::http_client()?;
    match function
        .until_serving(&client, Duration::from_secs(20))
        .await
    {
        Some(_) => Ok(()),
        None => anyhow::bail!(
            "{} does not listen on {} (its log: {})",
            function.bin().display(),
            function.port,
            function.log().display()
        ),
    }
}
