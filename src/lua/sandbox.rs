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

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::{HookTriggers, VmState};
    use std::time::Duration;

    fn vm() -> Lua {
        let lua = Lua::new();
        lua.load("jit.off()").exec().unwrap();
        install(&lua, false, 0).unwrap();
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(budget::CHECK_EVERY_INSTRUCTIONS),
            |_, _| {
                if budget::aborting().is_none() && !budget::over_budget() {
                    return Ok(VmState::Continue);
                }
                Err(budget::abort("test"))
            },
        )
        .unwrap();
        lua
    }

    #[test]
    fn pcall_xpcall_and_resume_cannot_swallow_the_abort() {
        let lua = vm();
        budget::set_budget(Duration::from_millis(50));
        for code in [
            "while true do pcall(function() while true do end end) end",
            "while true do xpcall(function() while true do end end, function(e) return e end) end",
            "while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
        ] {
            let _poll = budget::Poll::start();
            let err = lua.load(code).exec().unwrap_err();
            assert!(err.to_string().contains("hook aborted"), "{code}: {err}");
        }
    }

    #[test]
    fn bytecode_and_os_exit_are_refused() {
        let lua = vm();
        let _poll = budget::Poll::start();
        let err: String = lua
            .load("return select(2, load(string.dump(function() end)))")
            .eval()
            .unwrap();
        assert!(err.contains("binary chunk"), "{err}");
        let err = lua.load("os.exit(1)").exec().unwrap_err();
        assert!(
            err.to_string().contains("os.exit is not available"),
            "{err}"
        );
        let err = lua.load("io.open('/etc/hostname')").exec().unwrap_err();
        assert!(err.to_string().contains("systemAccess"), "{err}");
        for refused in [
            "collectgarbage('stop')",
            "jit.on()",
            "require('jit.util')",
            "loadfile()",
            "os.execute('true')",
        ] {
            assert!(lua.load(refused).exec().is_err(), "{refused} ran");
        }
        let absent: bool = lua
            .load("return debug == nil and ffi == nil and not pcall(require, 'ffi')")
            .eval()
            .unwrap();
        assert!(absent, "debug or ffi is reachable");
        let kept: f64 = lua
            .load("return os.time() + os.clock() + collectgarbage('count') + #os.date('%Y')")
            .eval()
            .unwrap();
        assert!(kept > 0.0);
    }
}

#[cfg(test)]
mod nesting_tests {
    use super::*;

    /// Runs `f` on a thread with a worker's stack.
    fn on_worker_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(budget::WORKER_STACK_BYTES)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn deep_callbacks_into_lua_are_an_error_not_a_stack_overflow() {
        on_worker_stack(|| {
            let lua = Lua::new();
            install(&lua, false, 0).unwrap();
            super::super::mix::install(&lua).unwrap();
            let _poll = budget::Poll::start();
            for code in [
                "local function f(s) return (s:gsub('x', f)) end return f('x')",
                "local t = setmetatable({}, {__tostring = function(s) print(s) return '' end}) print(t)",
                "local function f() return coroutine.wrap(f)() end f()",
            ] {
                let err = lua.load(code).exec().unwrap_err();
                assert!(
                    err.to_string().contains("nested deeper than"),
                    "{code}: {err}"
                );
            }
        });
    }
}
