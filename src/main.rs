//! The `connmix` command: parses arguments, loads the config, starts the
//! gateway and waits for SIGINT/SIGTERM. Nothing else lives here.

use clap::{Parser, Subcommand};
use connmix::config::Config;
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
        None => run(Path::new("connmix.yaml"), Mode::Single),
        Some(Command::Dev(a)) | Some(Command::Single(a)) => run(&a.file, Mode::Single),
        Some(Command::Engine(a)) => run(&a.file, Mode::Cluster),
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

fn load(file: &Path) -> Result<Config, ExitCode> {
    Config::load(file).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn check(file: &Path) -> ExitCode {
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for k in &config.unknown_keys {
        eprintln!("warning: {}: unknown key {k} (ignored)", file.display());
    }
    let lua = mlua::Lua::new();
    for (i, s) in config.engine.servers.iter().enumerate() {
        let path = config.resolve_entry(&s.entry);
        if let Err(e) = connmix::lua::compile(&lua, &path) {
            eprintln!("error: engine.servers[{i}].entry: {e}");
            return ExitCode::from(1);
        }
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

fn run(file: &Path, mode: Mode) -> ExitCode {
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let log = match connmix::logging::init(&config.logging) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {}: logging.filename: {e}", file.display());
            return ExitCode::from(2);
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
        tracing::info!("connmix {} ready", env!("CARGO_PKG_VERSION"));
        if let Some(file) = &log_file {
            // The log goes to a file: say once on the terminal that we run.
            eprintln!(
                "connmix {} ready (api http://{}); logging to {file}",
                env!("CARGO_PKG_VERSION"),
                gateway.api_addr
            );
        }
        signals.wait().await;
        tracing::info!("shutting down");
        gateway.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
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
