//! Failpoints: named places where a test can make the process crash,
//! stall or fail, to check what survives a fault at exactly that step.
//!
//! Step in the flow: compiled in everywhere, and inert unless the
//! environment variable `QUIVER_FAILPOINTS` names them when the process
//! starts, as `name=action[;name=action...]`, where action is
//! - `crash`: the process aborts at once (as SIGKILL would stop it);
//! - `pause:<ms>`: the step waits that long (a test kills another process
//!   meanwhile; the log line "failpoint reached" tells it when);
//! - `error`: the step fails with SQLSTATE XX000.
//!
//! Only tests set it; production never does.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use crate::sql::SqlError;

/// The environment variable naming the active failpoints.
pub const ENV: &str = "QUIVER_FAILPOINTS";

fn active() -> &'static HashMap<String, String> {
    static POINTS: OnceLock<HashMap<String, String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var(ENV)
            .unwrap_or_default()
            .split(';')
            .filter_map(|p| p.split_once('='))
            .map(|(n, a)| (n.trim().to_owned(), a.trim().to_owned()))
            .collect()
    })
}

/// Reaches failpoint `name`: does what the environment says, or nothing.
pub async fn hit(name: &str) -> Result<(), SqlError> {
    let Some(action) = active().get(name) else {
        return Ok(());
    };
    tracing::warn!(failpoint = name, action = %action, "failpoint reached");
    match action.split_once(':') {
        _ if action == "crash" => {
            eprintln!("failpoint {name}: crash");
            std::process::abort();
        }
        _ if action == "error" => Err(SqlError::new(
            "XX000",
            format!("failpoint {name} was switched on"),
        )),
        Some(("pause", ms)) => {
            let ms = ms.parse().unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        }
        _ => Ok(()),
    }
}
