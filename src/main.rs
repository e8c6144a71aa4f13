//! The `connmix` command: parses arguments, loads the config, starts the
//! gateway and waits for SIGINT/SIGTERM. Nothing else lives here.

use clap::{Parser, Subcommand};
use connmix::config::{Config, ConfigError};
use connmix::lua::ScriptError;
use connmix::{Gateway, Mode};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "connmix",
    version,
    about = "Real-time push gateway: WebSocket clients, Lua hooks, HTTP publish"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a complete single node (in-process broker, no external service).
    Dev(FileArg),
    /// Same as `dev`: a complete single node.
    Single(FileArg),
    /// Run a cluster node: nodes share the Redis broker of `engine.cluster`.
    Engine(FileArg),
    /// Validate the config and compile every entry script, then exit.
    Check(FileArg),
    /// Print an HS256 JWT for a user (uid, iat, exp) for `mix.jwt.verify`.
    Token(TokenArgs),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Shared secret; default: the `jwt_secret` server option of the config.
    #[arg(long)]
    secret: Option<String>,
    /// The user id (the `uid` claim; a number when it is an integer).
    #[arg(long)]
    uid: String,
    /// Lifetime: seconds or e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Extra claims, a JSON object, e.g. '{"role":"admin"}'.
    #[arg(long)]
    claims: Option<String>,
    /// Path to connmix.yaml (read only when --secret is absent).
    #[arg(short = 'f', long = "file", default_value = "connmix.yaml")]
    file: PathBuf,
}

#[derive(clap::Args)]
struct FileArg {
    /// Path to connmix.yaml.
    #[arg(short = 'f', long = "file", default_value = "connmix.yaml")]
    file: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run(Path::new("connmix.yaml"), false, Mode::Single),
        Some(Command::Dev(a)) | Some(Command::Single(a)) => run(&a.file, true, Mode::Single),
        Some(Command::Engine(a)) => run(&a.file, true, Mode::Cluster),
        Some(Command::Check(a)) => check(&a.file),
        Some(Command::Token(a)) => token(a),
    }
}

fn token(a: TokenArgs) -> ExitCode {
    let minted = connmix::jwt::token_command(
        a.secret.as_deref(),
        &a.uid,
        &a.ttl,
        a.claims.as_deref(),
        &a.file,
    );
    match minted {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Prints a configuration problem and gives the exit status every
/// configuration problem shares.
fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(ConfigError::EXIT_CODE)
}

/// Reads the config, then reads and compiles every server's entry script
/// and the modules beside it (what start-up and hot reload accept).
fn load(file: &Path, file_given: bool) -> Result<Config, ExitCode> {
    let config = Config::load(file).map_err(|e| {
        let code = config_failure(&e);
        if !file_given && matches!(e, ConfigError::Read { .. }) {
            // `connmix` alone reads ./connmix.yaml; nothing is embedded.
            eprintln!(
                "hint: connmix has no built-in config; run it where connmix.yaml and lua/ are \
                 (the repository), or pass -f FILE"
            );
        }
        code
    })?;
    for (i, s) in config.engine.servers.iter().enumerate() {
        let path = config.resolve_entry(&s.entry);
        if let Err(e) = connmix::script::read_checked_with_modules(&path) {
            let key = format!("engine.servers[{i}].entry");
            let message = match e {
                ScriptError::Read { path, source } => {
                    let why = source.to_string();
                    let why = why.split(" (os error").next().unwrap_or_default();
                    format!("cannot read {path}: {why}")
                }
                ScriptError::Compile(m) => m,
            };
            return Err(config_failure(&ConfigError::at_key(file, &key, message)));
        }
    }
    Ok(config)
}

fn check(file: &Path) -> ExitCode {
    let config = match load(file, true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for k in &config.unknown_keys {
        eprintln!("warning: {}: unknown key {k} (ignored)", file.display());
    }
    println!(
        "{}: ok ({} server{})",
        file.display(),
        config.engine.servers.len(),
        if config.engine.servers.len() == 1 {
            ""
        } else {
            "s"
        }
    );
    ExitCode::SUCCESS
}

fn run(file: &Path, file_given: bool, mode: Mode) -> ExitCode {
    let config = match load(file, file_given) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let log = match connmix::logging::init(&config.logging) {
        Ok(h) => h,
        Err(e) => {
            return config_failure(&ConfigError::at_key(
                file,
                "logging.filename",
                e.to_string(),
            ));
        }
    };
    for k in &config.unknown_keys {
        tracing::warn!("{}: unknown key {k} (ignored)", file.display());
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("connmix-io")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let paths: Vec<String> = config
        .engine
        .servers
        .iter()
        .map(|s| s.path().to_string())
        .collect();
    let log_file = config
        .logging
        .filename
        .clone()
        .filter(|f| !f.trim().is_empty());
    rt.block_on(async move {
        // Handlers first: a signal that arrives while starting must still
        // mean a clean stop, not the default termination.
        let signals = Signals::install();
        let gateway = match Gateway::start(config, mode, Some(log.level_setter())).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let urls = urls(&gateway, &paths);
        tracing::info!("connmix {} ready: {urls}", env!("CARGO_PKG_VERSION"));
        if let Some(file) = &log_file {
            // The log goes to a file: say once on the terminal that we run.
            eprintln!(
                "connmix {} ready: {urls}; logging to {file}",
                env!("CARGO_PKG_VERSION"),
            );
        }
        signals.wait().await;
        tracing::info!("shutting down");
        gateway.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Where to point a browser or a client: `clients ws://... API http://...
/// demo http://.../demo`, with a wildcard bind shown as 127.0.0.1.
fn urls(gateway: &Gateway, paths: &[String]) -> String {
    let show = |a: &std::net::SocketAddr| {
        let ip = if a.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else if a.is_ipv6() {
            format!("[{}]", a.ip())
        } else {
            a.ip().to_string()
        };
        format!("{ip}:{}", a.port())
    };
    let clients: Vec<String> = gateway
        .server_addrs
        .iter()
        .zip(paths)
        .map(|(a, p)| format!("ws://{}{p}", show(a)))
        .collect();
    let api = format!("http://{}", show(&gateway.api_addr));
    format!("clients {}, API {api}, demo {api}/demo", clients.join(" "))
}

/// SIGINT and SIGTERM, listened to from start-up on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            term: signal(SignalKind::terminate()).expect("install SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("install SIGINT handler"),
        }
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
