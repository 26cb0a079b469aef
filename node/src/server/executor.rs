//! The `[executor]` section of the config file: how a coordinator talks to
//! its workers.
//!
//! Step in the flow: [`super::config::NodeConfig::merge_toml`] reads the
//! section into [`ExecutorConfig`], [`ExecutorConfig::check`] refuses a bad
//! value with one clear line at start-up, and
//! [`ExecutorConfig::setting_defaults`] turns it into the node-wide defaults
//! of the `quiver.*` settings of the same names:
//! - `max_cached_conns_per_worker` and `max_shared_pool_size` size the
//!   node's shared connection pool (fixed at start-up);
//! - `max_adaptive_executor_pool_size` and `executor_slow_start_interval`
//!   bound each query's streams per worker (sessions may `SET` them).

use serde::Deserialize;

use super::config::ConfigError;
use crate::sql::settings::parse_millis;

/// `[executor]` as written in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    /// HTTP/2 connections kept per worker.
    pub max_cached_conns_per_worker: Option<u32>,
    /// Calls in flight to one worker across all sessions (0: no bound).
    pub max_shared_pool_size: Option<u32>,
    /// Streams one query opens to one worker at a time.
    pub max_adaptive_executor_pool_size: Option<u32>,
    /// Pause between opening a query's further streams to one worker,
    /// e.g. `"10ms"` (0 turns slow start off).
    pub executor_slow_start_interval: Option<String>,
}

impl ExecutorConfig {
    /// Refuses values no setting can take.
    pub fn check(&self) -> Result<(), ConfigError> {
        let positive = [
            (
                "executor.max_cached_conns_per_worker",
                self.max_cached_conns_per_worker,
            ),
            (
                "executor.max_adaptive_executor_pool_size",
                self.max_adaptive_executor_pool_size,
            ),
        ];
        for (key, v) in positive {
            if v == Some(0) {
                return Err(ConfigError::InvalidValue {
                    key,
                    value: "0".into(),
                    reason: "must be at least 1",
                });
            }
        }
        if let Some(t) = &self.executor_slow_start_interval {
            if parse_millis(t).is_none() {
                return Err(ConfigError::InvalidValue {
                    key: "executor.executor_slow_start_interval",
                    value: t.clone(),
                    reason: "expected a duration such as \"10ms\" or \"1s\"",
                });
            }
        }
        Ok(())
    }

    /// The `quiver.*` setting defaults this section gives.
    pub fn setting_defaults(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push((format!("quiver.{k}"), v));
            }
        };
        push(
            "max_cached_conns_per_worker",
            self.max_cached_conns_per_worker.map(|n| n.to_string()),
        );
        push(
            "max_shared_pool_size",
            self.max_shared_pool_size.map(|n| n.to_string()),
        );
        push(
            "max_adaptive_executor_pool_size",
            self.max_adaptive_executor_pool_size.map(|n| n.to_string()),
        );
        push(
            "executor_slow_start_interval",
            self.executor_slow_start_interval.clone(),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_and_defaults() {
        let c: ExecutorConfig = toml::from_str(
            "max_cached_conns_per_worker = 2\nmax_shared_pool_size = 64\n\
             max_adaptive_executor_pool_size = 4\nexecutor_slow_start_interval = \"5ms\"\n",
        )
        .unwrap();
        c.check().unwrap();
        let d = c.setting_defaults();
        assert_eq!(d.len(), 4);
        assert!(d.contains(&("quiver.executor_slow_start_interval".into(), "5ms".into())));
        let bad = ExecutorConfig {
            executor_slow_start_interval: Some("soon".into()),
            ..Default::default()
        };
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .contains("executor_slow_start_interval"));
        let zero = ExecutorConfig {
            max_adaptive_executor_pool_size: Some(0),
            ..Default::default()
        };
        assert!(zero.check().is_err());
        assert!(toml::from_str::<ExecutorConfig>("bogus = 1").is_err());
    }
}
