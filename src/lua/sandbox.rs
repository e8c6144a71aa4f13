//! What a script can and cannot do: installed once per VM before any
//! script runs (the rules themselves are in `sandbox.lua`).
//!
//! - `pcall`, `xpcall` and `coroutine.resume` cannot swallow the CPU
//!   budget's abort (see [`super::budget`]).
//! - Coroutines nest at most [`super::budget::MAX_COROUTINE_DEPTH`] deep.
//! - `load`, `loadstring`, `loadfile`, `dofile` and `require` take text
//!   only: bytecode can crash the VM.
//! - `os.exit` is refused; `collectgarbage("stop")` too (a stopped
//!   collector only ends in the memory limit); `jit.on` too (compiled code
//!   never runs the count hook).
//! - Unless `engine.luavm.systemAccess` is true: `io.*`, `os.execute`,
//!   `os.remove`, `os.rename`, `os.tmpname`, `os.getenv`, `os.setlocale`,
//!   `package.loadlib` and C modules are refused.
//! - The pattern functions of `string` run in Rust under the budget
//!   ([`super::strlib`]).

use super::budget;
use mlua::Lua;

/// Installs the rules into `lua`'s globals.
pub fn install(lua: &Lua, system_access: bool, memory_limit: usize) -> mlua::Result<()> {
    super::strlib::install(lua, memory_limit)?;
    let aborting = lua.create_function(|_, ()| Ok(budget::aborting().is_some()))?;
    let enter = lua.create_function(|_, ()| budget::enter_coroutine())?;
    let leave = lua.create_function(|_, ()| {
        budget::leave_coroutine();
        Ok(())
    })?;
    lua.load(include_str!("sandbox.lua"))
        .set_name("=sandbox")
        .call::<()>((aborting, enter, leave, system_access))
}
