//! Entry scripts as the whole node sees them: each server's current source
//! and a version that goes up whenever a changed file is accepted.
//!
//! One watcher checks the files (every `byteCodeExpires` seconds): the entry
//! script and every `.lua` file under its folder (the modules it
//! `require`s). A change is compiled once, in a scratch VM, before it is
//! accepted; a file with a syntax error is refused with file and line and
//! the old code keeps serving. Workers compare versions before each hook and
//! recompile from here (dropping the modules they had loaded, so `require`
//! reads them again), so every worker switches on its next hook.
//!
//! Compiling lives here too ([`compile_source`]): the Lua runtime
//! (`crate::lua`) uses this module, never the other way round.

use crate::config::Config;
use mlua::{Function, Lua};
use parking_lot::{Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// A file younger than this may still be being written; look again later.
const SETTLE: Duration = Duration::from_millis(200);

struct Shared {
    path: PathBuf,
    /// Seconds between checks; 0 = never reload.
    expires: u64,
    version: AtomicU64,
    source: RwLock<Arc<Vec<u8>>>,
    stamp: Mutex<Stamp>,
}

/// What the watcher compares: the newest modification time among the entry
/// and the `.lua` files under its folder, and how many there are (so an
/// added or removed module counts as a change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Stamp {
    newest: Option<SystemTime>,
    files: usize,
}

/// `.lua` files under `dir`, three levels deep at most.
fn lua_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let skip = name.starts_with('.') || name == "node_modules" || name == "target";
            if depth > 0 && !skip {
                lua_files(&p, depth - 1, out);
            }
        } else if p.extension().is_some_and(|x| x == "lua") {
            out.push(p);
        }
    }
}

/// The entry and the modules beside it.
fn watched_files(entry: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(dir) = entry.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        lua_files(dir, 3, &mut files);
    }
    if !files.iter().any(|f| f == entry) {
        files.push(entry.to_path_buf());
    }
    files
}

fn stamp(files: &[PathBuf]) -> Stamp {
    Stamp {
        newest: files.iter().filter_map(|f| mtime(f)).max(),
        files: files.len(),
    }
}

/// Why a script could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Compile(String),
}

/// Compiles script text into `lua`; errors carry file and line.
pub fn compile_source(lua: &Lua, path: &Path, src: &[u8]) -> Result<Function, ScriptError> {
    lua.load(src)
        .set_mode(mlua::chunk::ChunkMode::Text)
        .set_name(format!("@{}", path.display()))
        .into_function()
        .map_err(|e| ScriptError::Compile(first_line(&e.to_string())))
}

/// Reads and compiles a script file into `lua`.
pub fn compile(lua: &Lua, path: &Path) -> Result<Function, ScriptError> {
    let src = std::fs::read(path).map_err(|source| ScriptError::Read {
        path: path.display().to_string(),
        source,
    })?;
    compile_source(lua, path, &src)
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("syntax error: ")
        .to_string()
}

/// See the module documentation.
pub struct ScriptStore {
    scripts: Vec<Shared>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reads a script and checks that it compiles; the error names file and line.
pub fn read_checked(path: &Path) -> Result<Vec<u8>, ScriptError> {
    let src = std::fs::read(path).map_err(|source| ScriptError::Read {
        path: path.display().to_string(),
        source,
    })?;
    compile_source(&mlua::Lua::new(), path, &src)?;
    Ok(src)
}

/// Reads an entry script after checking that it and every module beside it
/// (the files hot reload watches) compile; the error names file and line.
/// `connmix check`, start-up and hot reload all accept exactly this.
pub fn read_checked_with_modules(entry: &Path) -> Result<Vec<u8>, ScriptError> {
    check_modules(entry, &watched_files(entry))?;
    read_checked(entry)
}

fn check_modules(entry: &Path, files: &[PathBuf]) -> Result<(), ScriptError> {
    // `./entry.lua` is the entry too: compare the files, not the spellings.
    let entry_file = std::fs::canonicalize(entry).ok();
    files
        .iter()
        .filter(|f| *f != entry && std::fs::canonicalize(f).ok() != entry_file)
        .try_for_each(|f| read_checked(f).map(drop))
}

impl ScriptStore {
    /// Loads every server's entry script; fails on the first that cannot be
    /// read or compiled.
    pub fn load(config: &Config) -> Result<Self, ScriptError> {
        let mut scripts = Vec::new();
        for s in &config.engine.servers {
            let path = config.resolve_entry(&s.entry);
            let stamp = stamp(&watched_files(&path));
            let source = read_checked_with_modules(&path)?;
            scripts.push(Shared {
                path,
                expires: s.byte_code_expires,
                version: AtomicU64::new(0),
                source: RwLock::new(Arc::new(source)),
                stamp: Mutex::new(stamp),
            });
        }
        Ok(Self { scripts })
    }

    pub fn path(&self, server: usize) -> &Path {
        &self.scripts[server].path
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.scripts.iter().map(|s| s.path.clone()).collect()
    }

    /// The current version of a server's script.
    pub fn version(&self, server: usize) -> u64 {
        self.scripts[server].version.load(Ordering::Acquire)
    }

    /// The current source and its version.
    pub fn source(&self, server: usize) -> (u64, Arc<Vec<u8>>) {
        let s = &self.scripts[server];
        let src = s.source.read().clone();
        (s.version.load(Ordering::Acquire), src)
    }

    /// Checks every reloadable script once; returns what changed.
    pub fn check_changes(&self) -> Vec<(PathBuf, Result<(), ScriptError>)> {
        let mut out = Vec::new();
        for s in self.scripts.iter().filter(|s| s.expires > 0) {
            let files = watched_files(&s.path);
            let now = stamp(&files);
            if now.newest.is_none() || now == *s.stamp.lock() {
                continue;
            }
            if matches!(now.newest.map(|t| t.elapsed()), Some(Ok(age)) if age < SETTLE) {
                continue;
            }
            *s.stamp.lock() = now;
            // Every module must compile too, or nothing changes.
            let modules_ok = check_modules(&s.path, &files);
            let res = modules_ok.and_then(|()| read_checked(&s.path)).map(|src| {
                *s.source.write() = Arc::new(src);
                s.version.fetch_add(1, Ordering::AcqRel);
            });
            out.push((s.path.clone(), res));
        }
        out
    }

    /// Checks for changes every `byteCodeExpires` seconds (the smallest of
    /// the servers that enable it) until `stop` fires.
    pub fn spawn_watcher(self: &Arc<Self>, stop: CancellationToken) {
        let Some(every) = self
            .scripts
            .iter()
            .map(|s| s.expires)
            .filter(|&e| e > 0)
            .min()
        else {
            return;
        };
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                for (path, res) in store.check_changes() {
                    match res {
                        Ok(()) => tracing::info!("reloaded {}", path.display()),
                        Err(e) => {
                            tracing::error!("reload refused, the old script keeps serving: {e}")
                        }
                    }
                }
            }
        });
    }
}
