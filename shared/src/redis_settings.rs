//! What a Redis says of itself (`INFO`) that decides whether it can lose a
//! single-use mark: its eviction policy and memory, its persistence, its
//! replication. Read with `INFO`, which managed Redis answers (ElastiCache
//! disables `CONFIG`); at start and by `/health/ready`.
//!
//! A finding says which setting, what it does to the marks and the fix.
//! sso-login's record of logins in the database keeps a token single use
//! when Redis loses its mark, so most findings cost only a database round
//! trip per replay that Redis no longer knows; a Redis that refuses the
//! claims themselves (a full `noeviction` store, a read-only replica) fails
//! logins, and readiness with them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;

use crate::metrics::WarningMetric;
use crate::redis_client::RedisClient;

/// The metric of a finding ([`WarningMetric`]).
pub const AT_RISK_METRIC: &str = "replay_store_at_risk";
/// From this share of `maxmemory` on, a `noeviction` store is reported as
/// filling up: at 100 % it refuses every write.
const FULL_SOON: f64 = 0.9;

/// One node's settings, as `INFO` reports them; `None` where it reports
/// nothing (a Redis-compatible service may leave sections out), which is
/// not taken to be safe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSettings {
    pub maxmemory: Option<u64>,
    pub maxmemory_policy: Option<String>,
    pub used_memory: Option<u64>,
    pub aof_enabled: Option<bool>,
    /// `master` or `slave`.
    pub role: Option<String>,
    pub connected_replicas: Option<u64>,
}

/// A setting that can lose marks or refuse them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The setting as the provider names it (`maxmemory-policy`).
    pub setting: &'static str,
    /// What it is set to, what that does to the marks, and the fix.
    pub message: String,
    /// Redis refuses the claims themselves: logins fail (readiness 503).
    pub refuses_claims: bool,
}

/// What the findings that Redis can lose marks add: the database still
/// refuses those replays.
const RECORD_STILL_REFUSES: &str = "(the database's record of logins still refuses their replays)";

impl StoreSettings {
    /// The fields of an `INFO` reply (`name:value` lines; sections and
    /// unknown fields are skipped, and so is a number that does not parse).
    pub fn parse(info: &str) -> Self {
        let mut settings = Self::default();
        for line in info.lines() {
            let Some((name, value)) = line.trim().split_once(':') else {
                continue;
            };
            let number = || value.parse::<u64>().ok();
            match name {
                "maxmemory" => settings.maxmemory = number(),
                "maxmemory_policy" => settings.maxmemory_policy = Some(value.to_owned()),
                "used_memory" => settings.used_memory = number(),
                "aof_enabled" => settings.aof_enabled = Some(value == "1"),
                "role" => settings.role = Some(value.to_owned()),
                "connected_slaves" => settings.connected_replicas = number(),
                _ => {}
            }
        }
        settings
    }

    /// What these settings can do to the marks, the gravest first.
    pub fn findings(&self) -> Vec<Finding> {
        let mut findings = Vec::new();
        let role = self.role.as_deref();
        if role == Some("slave") {
            findings.push(Finding {
                setting: "role",
                message:
                    "role slave: REDIS_URL names a read-only replica, which refuses every claim; \
                          fix: the primary (or configuration) endpoint"
                        .into(),
                refuses_claims: true,
            });
        }
        match (self.maxmemory_policy.as_deref(), self.maxmemory) {
            (None, _) => findings.push(Finding {
                setting: "maxmemory-policy",
                message: format!(
                    "maxmemory-policy not reported by INFO: Redis may evict single-use marks {RECORD_STILL_REFUSES}; \
                     fix: check that the provider's setting is noeviction (docs/deploy.md, \"The replay store's settings\")"
                ),
                refuses_claims: false,
            }),
            // No maxmemory: nothing is ever evicted, whatever the policy.
            (Some(_), Some(0)) => {}
            (Some(policy), maxmemory) if policy.starts_with("allkeys-") || policy.starts_with("volatile-") => {
                let at = maxmemory.map_or("maxmemory (not reported)".to_owned(), |m| format!("maxmemory ({m} bytes)"));
                findings.push(Finding {
                    setting: "maxmemory-policy",
                    message: format!(
                        "maxmemory-policy {policy}: at {at} Redis evicts keys, single-use marks among them \
                         {RECORD_STILL_REFUSES}; fix: maxmemory-policy noeviction (docs/deploy.md, \"The replay store's settings\")"
                    ),
                    refuses_claims: false,
                });
            }
            (Some(policy), Some(maxmemory)) => {
                if let Some(finding) = self.filling_up(policy, maxmemory) {
                    findings.push(finding);
                }
            }
            (Some(_), None) => {}
        }
        match self.aof_enabled {
            Some(true) => {}
            aof => findings.push(Finding {
                setting: "appendonly",
                message: format!(
                    "{}: a restart loses the marks written since the last snapshot, if any {RECORD_STILL_REFUSES}; \
                     fix: appendonly yes where the provider offers it, else a replica with automatic failover",
                    if aof.is_some() { "appendonly no" } else { "appendonly not reported by INFO" }
                ),
                refuses_claims: false,
            }),
        }
        if let (Some("master"), Some(replicas @ 1..)) = (role, self.connected_replicas) {
            findings.push(Finding {
                setting: "replication",
                message: format!(
                    "{replicas} replica(s), replicated asynchronously: a failover may lose the latest marks \
                     {RECORD_STILL_REFUSES}; nothing to set"
                ),
                refuses_claims: false,
            });
        }
        findings
    }

    /// A `noeviction` store near or at `maxmemory`: it refuses every write
    /// when full, claims among them.
    fn filling_up(&self, policy: &str, maxmemory: u64) -> Option<Finding> {
        let used = self.used_memory? as f64 / maxmemory as f64;
        if used < FULL_SOON {
            return None;
        }
        let full = used >= 1.0;
        Some(Finding {
            setting: "maxmemory",
            message: format!(
                "maxmemory {maxmemory} bytes, {} used ({:.0} %): with maxmemory-policy {policy} Redis {} every write, claims among them; \
                 fix: a larger node, or fewer other keys in this Redis",
                self.used_memory.unwrap_or_default(),
                used * 100.0,
                if full { "refuses" } else { "will soon refuse" }
            ),
            refuses_claims: full,
        })
    }
}

/// Every node's settings: one for a single server, one per node that a
/// cluster client asked.
pub async fn read(client: &RedisClient) -> Result<Vec<StoreSettings>, String> {
    let reply = async {
        let mut conn = client.connection().await?;
        redis::cmd("INFO").query_async::<Value>(&mut conn).await
    }
    .await;
    match reply {
        Ok(value) => {
            let mut texts = Vec::new();
            collect_texts(&value, &mut texts);
            if texts.is_empty() {
                return Err("INFO answered no text".into());
            }
            Ok(texts.iter().map(|t| StoreSettings::parse(t)).collect())
        }
        Err(e) => {
            client.forget_connection().await;
            Err(format!("INFO failed: {}", e.category()))
        }
    }
}

/// The text of an `INFO` reply: a string, or (from a cluster client) a map
/// or list of them, one per node.
fn collect_texts(value: &Value, texts: &mut Vec<String>) {
    match value {
        Value::BulkString(bytes) => texts.push(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => texts.push(text.clone()),
        Value::VerbatimString { text, .. } => texts.push(text.clone()),
        Value::Array(items) | Value::Set(items) => {
            items.iter().for_each(|item| collect_texts(item, texts))
        }
        Value::Map(pairs) => pairs.iter().for_each(|(_, v)| collect_texts(v, texts)),
        _ => {}
    }
}

/// The findings of every node, each once, the gravest first.
pub fn findings(settings: &[StoreSettings]) -> Vec<Finding> {
    let mut all: Vec<Finding> = Vec::new();
    for finding in settings.iter().flat_map(StoreSettings::findings) {
        if !all.contains(&finding) {
            all.push(finding);
        }
    }
    all.sort_by_key(|f| !f.refuses_claims);
    all
}

/// How often one instance repeats a finding that has not changed: a
/// readiness probe every few seconds must not write a warning every time.
pub const REPEAT_EVERY: Duration = Duration::from_secs(300);

/// Writes each finding as a warning line and a metric ([`AT_RISK_METRIC`]):
/// a new or changed one at once, an unchanged one every [`REPEAT_EVERY`].
pub struct Reporter {
    warnings: WarningMetric,
    /// Each finding's message when it was last written, and when.
    written: Mutex<HashMap<&'static str, (String, Instant)>>,
}

impl Reporter {
    pub fn new(warnings: WarningMetric) -> Self {
        Self {
            warnings,
            written: Mutex::new(HashMap::new()),
        }
    }

    pub fn report(&self, findings: &[Finding]) {
        for finding in self.due(findings, Instant::now()) {
            self.warnings
                .write(AT_RISK_METRIC, finding.setting, &finding.message);
        }
    }

    /// The findings to write at `now`, taken as written.
    fn due<'a>(&self, findings: &'a [Finding], now: Instant) -> Vec<&'a Finding> {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        findings
            .iter()
            .filter(|finding| {
                let due = written.get(finding.setting).is_none_or(|(message, at)| {
                    *message != finding.message || now.duration_since(*at) >= REPEAT_EVERY
                });
                if due {
                    written.insert(finding.setting, (finding.message.clone(), now));
                }
                due
            })
            .collect()
    }
}

/// Reads the settings once, in the background (the start does not wait for
/// Redis), and reports what can lose or refuse marks.
pub fn report_at_start(client: Arc<RedisClient>, reporter: Arc<Reporter>) {
    tokio::spawn(async move {
        match tokio::time::timeout(Duration::from_secs(2), read(&client)).await {
            Ok(Ok(settings)) => reporter.report(&findings(&settings)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the replay store's settings could not be read")
            }
            Err(_) => tracing::warn!("the replay store's settings could not be read in time"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const ELASTICACHE_DEFAULT: &str = "# Memory\r\nused_memory:1048576\r\nmaxmemory:3137339392\r\n\
        maxmemory_policy:volatile-lru\r\n# Persistence\r\naof_enabled:0\r\n\
        # Replication\r\nrole:master\r\nconnected_slaves:1\r\n";

    #[test]
    fn elasticache_defaults_are_each_reported_and_none_refuses_claims() {
        let settings = StoreSettings::parse(ELASTICACHE_DEFAULT);
        assert_eq!(settings.maxmemory_policy.as_deref(), Some("volatile-lru"));
        assert_eq!(settings.maxmemory, Some(3_137_339_392));
        assert_eq!(settings.connected_replicas, Some(1));
        let found = settings.findings();
        let names: Vec<&str> = found.iter().map(|f| f.setting).collect();
        assert_eq!(names, ["maxmemory-policy", "appendonly", "replication"]);
        assert!(found[0].message.contains("volatile-lru"));
        assert!(found[0].message.contains("noeviction"), "names the fix");
        assert!(found.iter().all(|f| !f.refuses_claims));
    }

    #[test]
    fn a_durable_noeviction_primary_without_replicas_has_nothing_to_report() {
        let settings = StoreSettings::parse(
            "maxmemory:1000\nmaxmemory_policy:noeviction\nused_memory:10\naof_enabled:1\nrole:master\nconnected_slaves:0\n",
        );
        assert_eq!(settings.findings(), []);
        // No maxmemory: nothing is ever evicted, whatever the policy.
        let unbounded = StoreSettings::parse(
            "maxmemory:0\nmaxmemory_policy:allkeys-lru\naof_enabled:1\nrole:master\n",
        );
        assert_eq!(unbounded.findings(), []);
    }

    #[test]
    fn a_setting_that_info_leaves_out_is_reported_not_taken_as_safe() {
        // A Redis-compatible service that answers only some sections.
        let partial = StoreSettings::parse("# Server\nredis_version:7.1\nrole:master\n");
        let found = partial.findings();
        let names: Vec<&str> = found.iter().map(|f| f.setting).collect();
        assert_eq!(names, ["maxmemory-policy", "appendonly"]);
        assert!(
            found[0].message.contains("not reported"),
            "{}",
            found[0].message
        );
        assert!(
            found[1].message.contains("not reported"),
            "{}",
            found[1].message
        );
        // An evicting policy without maxmemory's figure: it may evict.
        let no_figure = StoreSettings::parse("maxmemory_policy:volatile-lru\naof_enabled:1\n");
        assert_eq!(no_figure.findings()[0].setting, "maxmemory-policy");
    }

    #[test]
    fn an_unchanged_finding_is_written_once_per_interval_a_changed_one_at_once() {
        let config = crate::Config::from_vars(&crate::config::vars(&[])).unwrap();
        let reporter = Reporter::new(WarningMetric::new(&config));
        let finding = |message: &str| Finding {
            setting: "appendonly",
            message: message.to_owned(),
            refuses_claims: false,
        };
        let (a, b) = ([finding("a")], [finding("b")]);
        let start = Instant::now();
        let later = |seconds| start + Duration::from_secs(seconds);
        assert_eq!(reporter.due(&a, start).len(), 1, "new");
        assert_eq!(reporter.due(&a, later(5)).len(), 0, "unchanged, 5 s later");
        assert_eq!(reporter.due(&b, later(10)).len(), 1, "changed");
        assert_eq!(reporter.due(&b, later(200)).len(), 0);
        assert_eq!(
            reporter.due(&b, later(10) + REPEAT_EVERY).len(),
            1,
            "an interval later"
        );
    }

    #[test]
    fn a_full_noeviction_store_and_a_replica_refuse_claims() {
        let full = StoreSettings::parse(
            "maxmemory:1000\nmaxmemory_policy:noeviction\nused_memory:1000\naof_enabled:1\nrole:master\n",
        );
        let found = full.findings();
        assert_eq!(found.len(), 1);
        assert!(found[0].refuses_claims && found[0].message.contains("refuses every write"));
        let filling = StoreSettings::parse(
            "maxmemory:1000\nmaxmemory_policy:noeviction\nused_memory:950\naof_enabled:1\nrole:master\n",
        );
        let found = filling.findings();
        assert!(!found[0].refuses_claims && found[0].message.contains("will soon refuse"));
        let replica = StoreSettings::parse("role:slave\naof_enabled:1\n");
        assert!(replica.findings()[0].refuses_claims);
    }

    #[test]
    fn a_clusters_nodes_are_read_each_and_reported_once() {
        let node = Value::BulkString(ELASTICACHE_DEFAULT.as_bytes().to_vec());
        let reply = Value::Map(vec![
            (Value::SimpleString("a:6379".into()), node.clone()),
            (Value::SimpleString("b:6379".into()), node),
        ]);
        let mut texts = Vec::new();
        collect_texts(&reply, &mut texts);
        assert_eq!(texts.len(), 2);
        let settings: Vec<StoreSettings> = texts.iter().map(|t| StoreSettings::parse(t)).collect();
        assert_eq!(findings(&settings).len(), 3);
    }
}
