//! Settings that change without a restart: `access` and `logging.level`.
//!
//! A watcher re-reads the config file when its modification time changes.
//! A valid file has its live settings applied at once; an invalid one is
//! logged (with file and key) and ignored, so a typo never takes a running
//! node down. Other keys need a restart; the watcher says so.

use crate::api::access::Access;
use crate::config::Config;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Applies a log level (from [`crate::logging::LogHandle::level_setter`]).
pub type LevelSetter = Arc<dyn Fn(&str) + Send + Sync>;

/// How often the config file is checked.
const EVERY: Duration = Duration::from_secs(1);

fn mtime(p: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Watches `config.source` until `stop` fires.
pub fn spawn_watcher(
    config: Arc<Config>,
    access: Arc<Access>,
    set_level: Option<LevelSetter>,
    stop: CancellationToken,
) {
    let path = config.source.clone();
    if path.as_os_str().is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut seen = config.loaded_mtime.or_else(|| mtime(&path));
        let mut level = config.logging.level.clone();
        let mut users = config.access.users.len();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
            let now = mtime(&path);
            if now.is_none() || now == seen {
                continue;
            }
            seen = now;
            let fresh = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("config reload refused, keeping the running settings: {e}");
                    continue;
                }
            };
            access.replace(fresh.access.users.clone());
            if fresh.access.users.len() != users {
                users = fresh.access.users.len();
                tracing::info!("access: {users} API user(s) now");
            }
            if fresh.logging.level != level {
                level = fresh.logging.level.clone();
                // Said under the old level, so a switch to `warn` is still announced.
                tracing::info!("logging.level is now {level}");
                if let Some(set) = &set_level {
                    set(&level.to_ascii_lowercase());
                }
            }
            tracing::info!(
                "{} reloaded: access and logging.level applied; other changes take effect on restart",
                path.display()
            );
        }
    });
}
