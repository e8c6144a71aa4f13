//! The Lua runtime of one worker thread: one LuaJIT VM, the compiled entry
//! script of every server, and per-connection environments.
//!
//! Rules this module keeps:
//! - A VM never leaves its worker thread; everything here is `!Send`.
//! - Each entry chunk is compiled once per VM. A connection gets a fresh
//!   environment table (its own globals, falling back to the VM's globals)
//!   and the chunk is run once under it, so the hooks it defines see that
//!   connection's globals while `require`d modules stay shared per worker.
//! - Every hook runs as a coroutine inside a [`HookCall`] future. While it is
//!   polled, [`current`] names its connection (for `mix.websocket()`) and a
//!   count hook aborts it once one poll has used more CPU than the budget,
//!   so a runaway `while true do end` cannot freeze the worker ([`budget`]:
//!   the abort cannot be caught; [`sandbox`]: what scripts may call).
//! - Each VM's heap is capped (`engine.luavm.memoryLimit`, mlua's allocator,
//!   which LuaJIT's GC64 mode accepts): going over is a Lua error in the
//!   hook that allocated, after which the VM collects at once.
//! - A Lua error is logged with file, line and client id, counted, and
//!   swallowed: it never reaches the connection loop as a failure.

pub mod binary;
pub mod budget;
pub mod conn;
pub mod http;
pub mod json;
pub mod jwt;
pub mod mesh;
pub mod mix;
pub mod pattern;
pub mod pool;
pub mod queue;
pub mod recovery;
pub mod redis;
pub mod sandbox;
pub mod strlib;

use crate::config::Config;
use crate::mesh::Mesh;
pub use crate::script::{ScriptError, ScriptStore, compile, compile_source};
use conn::ConnLocal;
use mlua::{Function, HookTriggers, IntoLuaMulti, Lua, MultiValue, Table, VmState};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

thread_local! {
    static CURRENT: RefCell<Option<Rc<ConnLocal>>> = const { RefCell::new(None) };
}

/// The connection whose hook is running on this thread right now.
pub fn current() -> Option<Rc<ConnLocal>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// What Lua callbacks reach through `Lua::app_data_ref`.
pub struct WorkerCtx {
    pub mesh: Arc<Mesh>,
    pub config: Arc<Config>,
    pub http: reqwest::Client,
}

/// One server's entry script as compiled in this VM.
struct Script {
    chunk: RefCell<Function>,
    /// The [`ScriptStore`] version `chunk` was compiled from.
    version: Cell<u64>,
}

/// See the module documentation.
pub struct LuaRuntime {
    lua: Lua,
    /// Each server's script path as error messages show it.
    script_names: Vec<Rc<str>>,
    /// What connections of this VM share outside Lua callbacks.
    pub ctx: Rc<conn::CtxRef>,
    env_meta: Table,
    store: Arc<ScriptStore>,
    scripts: Vec<Script>,
    /// Modules loaded when the VM was made (standard libraries, `mix`):
    /// kept when a reload drops the script's own modules.
    builtin_modules: Vec<String>,
}

impl LuaRuntime {
    /// Builds a VM with the `mix` module and compiles every server's script.
    pub fn new(ctx: WorkerCtx, store: Arc<ScriptStore>) -> Result<Self, ScriptError> {
        let lua = Lua::new();
        let luavm = &ctx.config.engine.luavm;
        budget::set_budget(Duration::from_millis(luavm.hook_timeout_ms.max(1)));
        let (memory_limit, system_access) = (luavm.memory_limit, luavm.system_access);
        let entries = store.paths();
        let setup = || -> mlua::Result<Table> {
            // The count hook cannot fire inside JIT-compiled traces.
            lua.load("if jit then jit.off() end").exec()?;
            set_package_path(&lua, &entries)?;
            mix::install(&lua)?;
            sandbox::install(&lua, system_access, memory_limit)?;
            lua.set_global_hook(
                HookTriggers::new().every_nth_instruction(budget::CHECK_EVERY_INSTRUCTIONS),
                move |_, debug| {
                    if budget::aborting().is_none() && !budget::over_budget() {
                        return Ok(VmState::Continue);
                    }
                    let src = debug.source();
                    let file = src
                        .source
                        .as_deref()
                        .map(|s| s.trim_start_matches('@').to_string())
                        .unwrap_or_else(|| "?".into());
                    let line = debug.current_line().unwrap_or(0);
                    Err(budget::abort(&format!("{file}:{line}")))
                },
            )?;
            let meta = lua.create_table()?;
            meta.raw_set("__index", lua.globals())?;
            Ok(meta)
        };
        let env_meta = setup().map_err(|e| ScriptError::Compile(e.to_string()))?;
        if memory_limit > 0 {
            // Set after the setup: the standard libraries and `mix` fit anyway.
            lua.set_memory_limit(memory_limit)
                .map_err(|e| ScriptError::Compile(format!("engine.luavm.memoryLimit: {e}")))?;
        }
        lua.set_app_data(ctx);
        let mut scripts = Vec::new();
        for (i, path) in entries.iter().enumerate() {
            let (version, src) = store.source(i);
            scripts.push(Script {
                chunk: RefCell::new(compile_source(&lua, path, &src)?),
                version: Cell::new(version),
            });
        }
        let ctx = conn::ctx_ref(&lua);
        let builtin_modules = loaded_modules(&lua);
        let script_names = entries
            .iter()
            .map(|p| Rc::from(p.display().to_string()))
            .collect();
        Ok(Self {
            lua,
            script_names,
            ctx,
            env_meta,
            store,
            scripts,
            builtin_modules,
        })
    }

    /// Drops the modules scripts `require`d, so the next `require` reads the
    /// (possibly changed) file again.
    fn forget_script_modules(&self) {
        let Ok(loaded) = self
            .lua
            .globals()
            .get::<Table>("package")
            .and_then(|p| p.get::<Table>("loaded"))
        else {
            return;
        };
        for name in loaded_modules(&self.lua) {
            if !self.builtin_modules.contains(&name) {
                let _ = loaded.raw_set(name, mlua::Value::Nil);
            }
        }
    }

    /// Recompiles a server's chunk if the store has accepted a newer version.
    fn ensure_current(&self, server: usize) -> &Script {
        let script = &self.scripts[server];
        if self.store.version(server) != script.version.get() {
            self.forget_script_modules();
            let (version, src) = self.store.source(server);
            match compile_source(&self.lua, self.store.path(server), &src) {
                Ok(f) => *script.chunk.borrow_mut() = f,
                Err(e) => tracing::error!("recompiling a checked script failed: {e}"),
            }
            script.version.set(version);
        }
        script
    }

    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    /// The entry script's path of a server.
    pub fn script_path(&self, server: usize) -> &Path {
        self.store.path(server)
    }

    /// Creates a connection's environment: a fresh globals table in which the
    /// entry chunk has run once (defining the hooks).
    pub fn new_env(&self, conn: &Rc<ConnLocal>) -> mlua::Result<Table> {
        let env = self.lua.create_table()?;
        env.set_metatable(Some(self.env_meta.clone()))?;
        let script = self.ensure_current(conn.server);
        conn.script_version.set(script.version.get());
        self.run_chunk(conn, &script.chunk.borrow(), &env)?;
        Ok(env)
    }

    fn run_chunk(&self, conn: &Rc<ConnLocal>, chunk: &Function, env: &Table) -> mlua::Result<()> {
        chunk.set_environment(env.clone())?;
        let _scope = PollScope::enter(conn.clone());
        chunk.call::<()>(())
    }

    /// Whether the script of `conn` defines hook `name`: asked before
    /// building arguments that cost something to make.
    pub fn defines(&self, conn: &Rc<ConnLocal>, name: &str) -> bool {
        self.refresh(conn);
        conn.env()
            .is_some_and(|env| matches!(env.raw_get(name), Ok(mlua::Value::Function(_))))
    }

    /// Starts hook `name` of `conn` with `args` (the connection object is
    /// appended as the last argument). `None` when the script does not define it.
    pub fn hook(
        &self,
        conn: &Rc<ConnLocal>,
        name: &'static str,
        args: impl IntoLuaMulti,
    ) -> Option<HookCall> {
        self.refresh(conn);
        let env = conn.env()?;
        let func: Function = env.raw_get(name).ok()?;
        let mut args = args.into_lua_multi(&self.lua).ok()?;
        args.push_back(mlua::Value::UserData(conn.userdata()?));
        // Our own handle on the coroutine: its stack shows where an error
        // without a position (out of memory) happened.
        let started = self
            .lua
            .create_thread(func)
            .and_then(|t| Ok((t.clone(), t.into_async::<MultiValue>(args)?)));
        let (thread, fut) = match started {
            Ok(v) => v,
            Err(e) => {
                // A full VM (memoryLimit): the hook cannot even start.
                report_error(conn, name, &self.script_names[conn.server], &e);
                return None;
            }
        };
        Some(HookCall {
            thread,
            inner: Box::pin(fut),
            conn: conn.clone(),
            name,
            started: Instant::now(),
            script: self.script_names[conn.server].clone(),
        })
    }

    /// Re-runs a changed script in a live connection's environment before
    /// its next hook, so hot reload reaches existing connections.
    fn refresh(&self, conn: &Rc<ConnLocal>) {
        let script = self.ensure_current(conn.server);
        if conn.script_version.get() == script.version.get() {
            return;
        }
        conn.script_version.set(script.version.get());
        if let Some(env) = conn.env()
            && let Err(e) = self.run_chunk(conn, &script.chunk.borrow(), &env)
        {
            report_error(
                conn,
                "reload",
                &self.store.path(conn.server).display().to_string(),
                &e,
            );
        }
    }
}

/// Names in `package.loaded` now.
fn loaded_modules(lua: &Lua) -> Vec<String> {
    lua.globals()
        .get::<Table>("package")
        .and_then(|p| p.get::<Table>("loaded"))
        .map(|t| {
            t.pairs::<String, mlua::Value>()
                .filter_map(|kv| kv.ok().map(|(k, _)| k))
                .collect()
        })
        .unwrap_or_default()
}

/// `require` looks in each entry script's folder (and its `lua/` parent).
fn set_package_path(lua: &Lua, entries: &[PathBuf]) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let mut path: String = package.get("path")?;
    let mut dirs: Vec<String> = Vec::new();
    for e in entries {
        let dir = e
            .parent()
            .map(|d| d.display().to_string())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| ".".into());
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let mut prefix = String::new();
    for d in dirs {
        prefix.push_str(&format!("{d}/?.lua;{d}/?/init.lua;"));
    }
    path.insert_str(0, &prefix);
    package.set("path", path)
}

/// Sets the thread-locals that a running hook needs (its connection, a
/// fresh CPU budget), and restores them on drop.
struct PollScope {
    prev: Option<Rc<ConnLocal>>,
    _poll: budget::Poll,
}

impl PollScope {
    fn enter(conn: Rc<ConnLocal>) -> Self {
        let poll = budget::Poll::start();
        let prev = CURRENT.with(|c| c.borrow_mut().replace(conn));
        Self { prev, _poll: poll }
    }
}

impl Drop for PollScope {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = self.prev.take());
    }
}

type BoxedCall = Pin<Box<dyn Future<Output = mlua::Result<MultiValue>>>>;

/// A running hook; see the module documentation. Resolves to the hook's
/// return values, or `None` when it raised an error (already logged).
pub struct HookCall {
    thread: mlua::Thread,
    inner: BoxedCall,
    conn: Rc<ConnLocal>,
    name: &'static str,
    started: Instant,
    script: Rc<str>,
}

impl Future for HookCall {
    type Output = Option<MultiValue>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let res = {
            let _scope = PollScope::enter(this.conn.clone());
            this.inner.as_mut().poll(cx)
        };
        let res = match res {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        this.conn
            .metrics()
            .observe_hook(this.name, this.started.elapsed().as_secs_f64());
        Poll::Ready(match res {
            Ok(v) => Some(v),
            Err(e) => {
                let at = errored_line(&this.thread);
                report_error_at(&this.conn, this.name, &this.script, &e, at);
                if is_memory_error(&e) {
                    // LuaJIT has no emergency collection: free what the
                    // failed hook left behind before anyone allocates again.
                    let _ = this.conn.lua().gc_collect();
                }
                None
            }
        })
    }
}

/// Whether `e` (or what it wraps) is the VM running out of its memory limit.
fn is_memory_error(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => is_memory_error(cause),
        mlua::Error::WithContext { cause, .. } => is_memory_error(cause),
        other => other.to_string().contains("not enough memory"),
    }
}

/// `file:line` of the innermost Lua function on an errored coroutine's
/// stack (which LuaJIT keeps after the error). When LuaJIT does not know
/// the line (the error came from inside a C function such as `string.rep`),
/// the line where that Lua function starts.
fn errored_line(thread: &mlua::Thread) -> Option<String> {
    use mlua::ffi;
    let state = thread.state();
    for level in 0..32 {
        // SAFETY: `state` is a live coroutine of this VM (we hold a handle),
        // not running; lua_getstack/lua_getinfo only read its frames, and
        // `ar` is a plain C struct they fill.
        unsafe {
            let mut ar: ffi::lua_Debug = std::mem::zeroed();
            if ffi::lua_getstack(state, level, &mut ar) == 0 {
                return None;
            }
            if ffi::lua_getinfo(state, c"Sl".as_ptr(), &mut ar) == 0 || ar.source.is_null() {
                continue;
            }
            let line = if ar.currentline > 0 {
                ar.currentline
            } else {
                ar.linedefined
            };
            let src = std::ffi::CStr::from_ptr(ar.source).to_string_lossy();
            if line <= 0 || src.starts_with('=') {
                continue;
            }
            return Some(format!("{}:{line}", src.trim_start_matches('@')));
        }
    }
    None
}

/// Logs a Lua error with file, line and client id, and counts it.
pub fn report_error(conn: &ConnLocal, hook: &str, script: &str, e: &mlua::Error) {
    report_error_at(conn, hook, script, e, None);
}

/// [`report_error`], with where the hook's coroutine stopped for errors
/// whose text names no line.
fn report_error_at(
    conn: &ConnLocal,
    hook: &str,
    script: &str,
    e: &mlua::Error,
    stopped_at: Option<String>,
) {
    let text = e.to_string();
    let location = error_location(&text, script)
        .or(stopped_at)
        .unwrap_or_else(|| script.to_string());
    // "runtime error: file:12: boom" -> "boom"
    let first = &first_reason(&text);
    let first = first.strip_prefix("runtime error: ").unwrap_or(first);
    let message = first
        .strip_prefix(&format!("{location}: "))
        .unwrap_or(first);
    tracing::error!(
        client_id = %conn.client.id,
        "lua error in {hook} at {location} (client {}): {message}",
        conn.client.id
    );
    tracing::debug!(client_id = %conn.client.id, "lua traceback: {text}");
    conn.metrics()
        .record_lua_error(crate::metrics::LuaErrorRecord {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            client_id: conn.client.id.to_string(),
            hook: hook.to_string(),
            location,
            message: message.to_string(),
        });
}

/// The first line of an error, joined with its continuation when Lua puts
/// the reason on the next line ("error loading module 'm' from file
/// 'm.lua':\n\tm.lua:3: '=' expected"), so a broken module is logged with
/// its file, line and reason.
fn first_reason(text: &str) -> String {
    let mut lines = text.lines();
    let mut first = lines.next().unwrap_or("").to_string();
    if first.ends_with(':')
        && let Some(next) = lines.next().filter(|l| l.starts_with(['\t', ' ']))
    {
        first.push(' ');
        first.push_str(next.trim());
    }
    first
}

/// Finds `file:line` of the script (or any Lua file) in an error's text.
pub fn error_location(text: &str, script: &str) -> Option<String> {
    let find = |needle: &str| -> Option<String> {
        let mut rest = text;
        while let Some(pos) = rest.find(needle) {
            let after = &rest[pos + needle.len()..];
            let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
            if !digits.is_empty() {
                return Some(format!("{}{}", needle, digits));
            }
            rest = after;
        }
        None
    };
    if let Some(l) = find(&format!("{script}:")) {
        return Some(l);
    }
    // Another Lua file (a required module): "<path>.lua:<line>".
    let idx = text.find(".lua:")?;
    let start = text[..idx]
        .rfind(|c: char| c.is_whitespace() || c == '[' || c == '"')
        .map(|i| i + 1)
        .unwrap_or(0);
    let line: String = text[idx + 5..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    (!line.is_empty()).then(|| format!("{}.lua:{}", &text[start..idx], line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_scripts_line() {
        let t = "runtime error: lua/entry.websocket.lua:12: attempt to index a nil value";
        assert_eq!(
            error_location(t, "lua/entry.websocket.lua").as_deref(),
            Some("lua/entry.websocket.lua:12")
        );
        let t = "callback error\nstack traceback:\n\t[C]: in ?\n\tlua/lib/util.lua:3: in function";
        assert_eq!(
            error_location(t, "lua/entry.websocket.lua").as_deref(),
            Some("lua/lib/util.lua:3")
        );
    }
}
