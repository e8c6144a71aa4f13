//! The CPU budget of the hook running on this thread (`hookTimeoutMs`), and
//! the state that makes its abort impossible to catch.
//!
//! A hook's poll may use the budget; waiting (an `await` in a Rust helper)
//! starts a fresh one. Three things stop a poll that runs over:
//! - the VM's count hook (every [`CHECK_EVERY_INSTRUCTIONS`] Lua
//!   instructions) raises the abort error;
//! - long Rust helpers (pattern matching, JSON) tick a [`Ticker`], which
//!   raises it from inside their loops;
//! - once raised, the abort is *sticky* for the rest of the poll: the
//!   sandbox's `pcall`, `xpcall` and `coroutine.resume` re-raise any error
//!   they catch while [`aborting`], so a script cannot swallow it.
//!
//! The same per-poll state counts how deep coroutines are nested
//! ([`enter_coroutine`]): each nested resume takes native stack, and LuaJIT
//! has no bound of its own.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

/// How often (in VM instructions) the count hook looks at the clock.
pub const CHECK_EVERY_INSTRUCTIONS: u32 = 10_000;

/// Coroutines nested (one resumed from inside another) at most, counted
/// together with Rust helpers that call back into Lua (`gsub` with a
/// function, `print` with `__tostring`); one more level is an error. Each
/// level costs native stack of the worker thread.
pub const MAX_COROUTINE_DEPTH: u32 = 200;

/// Native stack of a worker thread: [`MAX_COROUTINE_DEPTH`] levels of the
/// deepest kind (a `gsub` replacement function calling `gsub`) overflow
/// the default 2 MiB in a debug build and fit in this (tested in
/// `sandbox.rs`); pages are only committed when used.
pub const WORKER_STACK_BYTES: usize = 16 << 20;

/// Steps of a Rust helper between two looks at the clock.
const TICKS_PER_CHECK: u32 = 4096;

thread_local! {
    static POLL_START: Cell<Option<Instant>> = const { Cell::new(None) };
    static BUDGET: Cell<Duration> = const { Cell::new(Duration::from_secs(1)) };
    static ABORT: RefCell<Option<String>> = const { RefCell::new(None) };
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Sets the budget of hooks on this thread (`engine.luavm.hookTimeoutMs`).
pub fn set_budget(budget: Duration) {
    BUDGET.with(|b| b.set(budget));
}

/// The state of one poll, restored when it ends (see [`Poll::start`]).
pub struct Poll {
    start: Option<Instant>,
    abort: Option<String>,
    depth: u32,
}

impl Poll {
    /// Starts a fresh budget; returns what was there before.
    pub fn start() -> Self {
        Self {
            start: POLL_START.with(|s| s.replace(Some(Instant::now()))),
            abort: ABORT.with(|a| a.borrow_mut().take()),
            depth: DEPTH.with(|d| d.replace(0)),
        }
    }
}

impl Drop for Poll {
    fn drop(&mut self) {
        POLL_START.with(|s| s.set(self.start));
        ABORT.with(|a| *a.borrow_mut() = self.abort.take());
        DEPTH.with(|d| d.set(self.depth));
    }
}

/// Whether the running poll has used its budget.
pub fn over_budget() -> bool {
    let budget = BUDGET.with(Cell::get);
    POLL_START.with(|s| s.get().is_some_and(|t| t.elapsed() > budget))
}

/// The abort raised in this poll, if any.
pub fn aborting() -> Option<String> {
    ABORT.with(|a| a.borrow().clone())
}

/// Raises (and remembers) the abort; `at` says where: `file:line` or the
/// name of the helper that was running.
pub fn abort(at: &str) -> mlua::Error {
    let msg = format!(
        "{at}: hook aborted: ran longer than {} ms without waiting (engine.luavm.hookTimeoutMs)",
        BUDGET.with(Cell::get).as_millis()
    );
    ABORT.with(|a| *a.borrow_mut() = Some(msg.clone()));
    mlua::Error::RuntimeError(msg)
}

/// `Err` when the poll is aborting already: for helpers that would
/// otherwise turn an error into a `nil, err` return value.
pub fn check_not_aborting() -> mlua::Result<()> {
    match aborting() {
        Some(msg) => Err(mlua::Error::RuntimeError(msg)),
        None => Ok(()),
    }
}

/// Counts the steps of a long Rust helper and aborts it once the poll is
/// over budget.
pub struct Ticker {
    what: &'static str,
    ticks: u32,
}

impl Ticker {
    pub fn new(what: &'static str) -> Self {
        Self { what, ticks: 0 }
    }

    #[inline]
    pub fn tick(&mut self) -> mlua::Result<()> {
        self.ticks += 1;
        if self.ticks < TICKS_PER_CHECK {
            return Ok(());
        }
        self.ticks = 0;
        check_not_aborting()?;
        if over_budget() {
            return Err(abort(self.what));
        }
        Ok(())
    }
}

/// One coroutine level deeper; an error past [`MAX_COROUTINE_DEPTH`].
pub fn enter_coroutine() -> mlua::Result<()> {
    check_not_aborting()?;
    let depth = DEPTH.with(|d| d.get());
    if depth >= MAX_COROUTINE_DEPTH {
        return Err(mlua::Error::RuntimeError(format!(
            "coroutines nested deeper than {MAX_COROUTINE_DEPTH}"
        )));
    }
    DEPTH.with(|d| d.set(depth + 1));
    Ok(())
}

/// Back out of one coroutine level.
pub fn leave_coroutine() {
    DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_over_budget_aborts_and_stays_aborted_until_it_ends() {
        set_budget(Duration::ZERO);
        {
            let _poll = Poll::start();
            std::thread::sleep(Duration::from_millis(2));
            let mut t = Ticker::new("string.find");
            let err = (0..TICKS_PER_CHECK).find_map(|_| t.tick().err());
            assert!(
                err.unwrap()
                    .to_string()
                    .contains("string.find: hook aborted")
            );
            assert!(aborting().is_some());
            assert!(check_not_aborting().is_err());
        }
        assert!(aborting().is_none());
        assert!(!over_budget(), "no poll, no budget");
    }

    #[test]
    fn coroutine_depth_is_bounded() {
        let _poll = Poll::start();
        for _ in 0..MAX_COROUTINE_DEPTH {
            enter_coroutine().unwrap();
        }
        assert!(enter_coroutine().is_err());
        leave_coroutine();
        assert!(enter_coroutine().is_ok());
    }
}
