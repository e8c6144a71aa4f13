//! Logging setup per `logging`: stdout, or a file rotated daily keeping
//! `maxFiles`; the level can be changed while running.

use crate::config::LoggingConfig;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the log writer alive and lets the level change at run time.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    _guard: Option<tracing_appender::non_blocking::WorkerGuard>,
}

fn filter_for(level: &str) -> EnvFilter {
    // Our crates at the configured level; dependencies only warn.
    EnvFilter::new(format!("warn,connmix={level},lua={level}"))
}

impl LogHandle {
    /// Applies a new level.
    pub fn set_level(&self, level: &str) {
        let _ = self.filter.reload(filter_for(level));
    }

    /// A shareable way to change the level later (config reload).
    pub fn level_setter(&self) -> crate::live::LevelSetter {
        let filter = self.filter.clone();
        std::sync::Arc::new(move |level: &str| {
            let _ = filter.reload(filter_for(level));
        })
    }
}

/// Installs the global subscriber. Fails if the log folder cannot be created.
pub fn init(cfg: &LoggingConfig) -> std::io::Result<LogHandle> {
    let (filter, handle) = reload::Layer::new(filter_for(&cfg.level.to_ascii_lowercase()));
    let file = cfg.filename.as_deref().filter(|f| !f.trim().is_empty());
    match file {
        Some(path) => {
            let path = std::path::Path::new(path);
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            let dir = dir.unwrap_or(std::path::Path::new("."));
            std::fs::create_dir_all(dir)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "connmix.log".into());
            let appender = tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix(name)
                .max_log_files(cfg.max_files.max(1))
                .build(dir)
                .map_err(std::io::Error::other)?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_writer(writer),
                )
                .try_init();
            Ok(LogHandle {
                filter: handle,
                _guard: Some(guard),
            })
        }
        None => {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                        .with_writer(std::io::stdout),
                )
                .try_init();
            Ok(LogHandle {
                filter: handle,
                _guard: None,
            })
        }
    }
}
