//! The fleet of one mode: every instance of each database function,
//! started at once, as a burst of traffic scales a function out.

use std::time::Duration;

use loadtest::function_process::FunctionProcess;
use testkit::free_port;

use crate::{Ground, JWT_SECRET, Mode};

pub struct Fleet {
    pub sso: Vec<FunctionProcess>,
    pub conversations: Vec<FunctionProcess>,
}

impl Fleet {
    /// `instances` of sso-login and of conversations, each with a pool of
    /// one connection to `database_url`, sharing the ground's Redis (under
    /// a key prefix of this run's own) and key endpoint.
    pub fn start(
        instances: usize,
        mode: Mode,
        database_url: &str,
        ground: &Ground,
    ) -> anyhow::Result<Self> {
        let prefix = format!("fleet-{}:", free_port());
        let mut vars: Vec<(&str, String)> = vec![
            ("JWT_SECRET", JWT_SECRET.into()),
            ("SSO_JWKS_URL", ground.keys.url.clone()),
            ("REDIS_URL", ground.redis.url()),
            ("REDIS_KEY_PREFIX", prefix),
            ("DATABASE_URL", database_url.into()),
            ("DB_POOL_SIZE", "1".into()),
            ("RUST_LOG", "warn".into()),
        ];
        if mode == Mode::Pooled {
            vars.push(("DATABASE_POOLER", "transaction".into()));
        }
        let start = |name: &str, i: usize| {
            let mode = mode.name().split(' ').next().unwrap_or("fleet");
            FunctionProcess::start(
                ground.bin_dir.join(name),
                vars.clone(),
                ground.logs.join(format!("{mode}-{name}-{i}.log")),
            )
        };
        let mut fleet = Self {
            sso: Vec::new(),
            conversations: Vec::new(),
        };
        for i in 0..instances {
            fleet.sso.push(start("sso-login", i)?);
            fleet.conversations.push(start("conversations", i)?);
        }
        Ok(fleet)
    }

    /// Each instance's cold start: until it answers HTTP (any answer), for
    /// a minute at most; those that never answered are left out.
    pub async fn cold_starts(&self, client: &reqwest::Client) -> Vec<Duration> {
        let limit = Duration::from_secs(60);
        let all = self.sso.iter().chain(&self.conversations);
        futures_util::future::join_all(all.map(|i| i.until_serving(client, limit)))
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}
