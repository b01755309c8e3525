//! `make bench`: the figures behind the speed and size targets, printed, never
//! asserted (these machines are shared and noisy). Runs the release binaries
//! in `BENCH_BIN_DIR` (default target/release) against the machine's
//! PostgreSQL and Redis, in a database (testkit's) and a key prefix of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::free_port;

const JWT_SECRET: &str = "bench-jwt-secret-0123456789abcdef0123456789";
const SSO_SECRET: &str = "bench-sso-secret-0123456789abcdef0123456789";

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let bin_dir =
        PathBuf::from(std::env::var("BENCH_BIN_DIR").unwrap_or_else(|_| "target/release".into()));
    let redis_url =
        std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());

    println!("== binary sizes ({})", bin_dir.display());
    for name in ["health", "sso-login", "conversations"] {
        let size = std::fs::metadata(bin_dir.join(name))?.len();
        println!(
            "{name:>14}: {:.2} MiB ({size} bytes)",
            size as f64 / 1048576.0
        );
    }

    println!("== health: process start to first 200 (20 cold starts, embedded in-memory database)");
    let mut starts = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..20 {
        let port = free_port();
        let started = Instant::now();
        let mut child = spawn(
            &bin_dir.join("health"),
            port,
            &[("DATABASE_URL", "sqlite::memory:")],
        )?;
        wait_ok(
            &format!("http://127.0.0.1:{port}/health"),
            Duration::from_millis(1),
        )
        .await?;
        starts.push(started.elapsed());
        rss.push(rss_kib(child.id()));
        stop(&mut child);
    }
    report("start to first response", &mut starts);
    rss.sort();
    println!(
        "{:>24}: median {} KiB, max {} KiB",
        "RSS after it",
        rss[rss.len() / 2],
        rss[rss.len() - 1]
    );

    // A database of the bench's own on the machine's PostgreSQL (dropped after).
    let db = testkit::services::TestDb::postgres().await;
    bench_with_services(&bin_dir, &db.url, &redis_url).await
}

async fn bench_with_services(bin_dir: &Path, db_url: &str, redis_url: &str) -> anyhow::Result<()> {
    let db = shared::db::Database::open_postgres(db_url, 2)?;
    let user =
        sso_login::users::upsert_user(&db, "bench-user", Some("bench@example.com"), Some("Bench"))
            .await?;
    for i in 0..100 {
        conversations::store::create(&db, user.id, &format!("conversation {i}"), &[]).await?;
    }
    let token = testkit::tokens::api_token(JWT_SECRET, user.id);
    let client = reqwest::Client::new();

    println!("== round trips on this machine (for scale)");
    let redis = redis::Client::open(redis_url)?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let mut pings = sample(1000, 0, async |_| {
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    })
    .await?;
    report("Redis PING", &mut pings);
    let mut selects = sample(500, 0, async |_| Ok(db.ping().await?)).await?;
    report("PostgreSQL SELECT 1", &mut selects);

    println!(
        "== conversations: GET /api/v1/conversations/?limit=20 (PostgreSQL, 100 rows, 500 sequential requests)"
    );
    let port = free_port();
    let mut conv = spawn(
        &bin_dir.join("conversations"),
        port,
        &[("DATABASE_URL", db_url)],
    )?;
    let list_url = format!("http://127.0.0.1:{port}/api/v1/conversations/?limit=20");
    wait_ok(
        &format!("http://127.0.0.1:{port}/api/v1/conversations/"),
        Duration::from_millis(5),
    )
    .await?;
    let mut lists = sample(500, 50, async |_| {
        let r = client.get(&list_url).bearer_auth(&token).send().await?;
        anyhow::ensure!(r.status() == 200, "list answered {}", r.status());
        r.bytes().await?;
        Ok(())
    })
    .await?;
    report("list latency", &mut lists);
    stop(&mut conv);

    println!(
        "== sso-login: POST /api/v1/auth/login/sso (Redis SET NX + PostgreSQL upsert + token, 300 sequential logins)"
    );
    let prefix = format!("tms-bench-{}:", uuid::Uuid::new_v4().simple());
    let port = free_port();
    let mut sso = spawn(
        &bin_dir.join("sso-login"),
        port,
        &[
            ("DATABASE_URL", db_url),
            ("REDIS_URL", redis_url),
            ("REDIS_KEY_PREFIX", &prefix),
            ("SSO_JWT_SECRET", SSO_SECRET),
        ],
    )?;
    let login_url = format!("http://127.0.0.1:{port}/api/v1/auth/login/sso");
    // Any answer under 500 (here a 404) means it serves.
    wait_ok(
        &format!("http://127.0.0.1:{port}/"),
        Duration::from_millis(5),
    )
    .await?;
    // Minted beforehand: the timing covers the login alone.
    let gcgc: Vec<String> = (0..330)
        .map(|i| gcgc_token(&format!("bench-sso-{}", i % 10)))
        .collect();
    let mut logins = sample(300, 30, async |i| {
        let r = client
            .post(&login_url)
            .json(&json!({ "token": gcgc[i] }))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "login answered {}", r.status());
        r.bytes().await?;
        Ok(())
    })
    .await?;
    report("login latency", &mut logins);
    stop(&mut sso);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
    }
    if let shared::db::Database::Postgres(pool) = db {
        pool.close().await;
    }
    Ok(())
}

fn gcgc_token(sub: &str) -> String {
    testkit::tokens::sso_token(SSO_SECRET, &testkit::tokens::sso_claims(sub))
}

/// Times `runs` calls of `op`, after `warmup` untimed ones.
async fn sample(
    runs: usize,
    warmup: usize,
    mut op: impl AsyncFnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let started = Instant::now();
        op(i).await?;
        if i >= warmup {
            samples.push(started.elapsed());
        }
    }
    Ok(samples)
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what:>24}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms (n={})",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(at(1.0)),
        samples.len()
    );
}

fn spawn(bin: &Path, port: u16, vars: &[(&str, &str)]) -> anyhow::Result<Child> {
    Command::new(bin)
        .env_clear()
        .env("FC_CUSTOM_LISTEN_PORT", port.to_string())
        .env("ALLOWED_HOSTS", "127.0.0.1,localhost")
        .env("JWT_SECRET", JWT_SECRET)
        .env("RUST_LOG", "warn")
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot start {}: {e} (run `make bench`, which builds it)",
                bin.display()
            )
        })
}

async fn wait_ok(url: &str, every: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(url).send().await
            && r.status().as_u16() < 500
        {
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
    anyhow::bail!("{url} did not answer")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
