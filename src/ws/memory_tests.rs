//! What every open connection keeps in memory, by part: the connection's
//! task (the future of [`super::connection::serve`]), its shared half
//! ([`Client`], with the [`Outbox`]) and its Lua side ([`ConnLocal`]).
//! README "Benchmarks" quotes the idle memory per connection; these sizes
//! are what a change to the connection's state adds to it, so each has a
//! budget: a change that needs more raises it here and says what the idle
//! figure became. (Futures are measured in the test build, which makes
//! them larger than a release build does; their budgets leave room for
//! that build's variation.)

use super::ServerShared;
use super::connection::{Driver, serve};
use super::upgrade::Open;
use crate::hub::Client;
use crate::lua::HookCall;
use crate::lua::conn::ConnLocal;
use crate::outbox::Outbox;
use crate::worker::WorkerState;
use std::mem::size_of;
use std::rc::Rc;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

/// The size of the future an async fn of two arguments returns.
pub(crate) fn future_size2<A, B, F>(_: impl Fn(A, B) -> F) -> usize {
    size_of::<F>()
}

/// The size of the future an async fn of four arguments returns.
pub(crate) fn future_size<A, B, C, D, F>(_: impl Fn(A, B, C, D) -> F) -> usize {
    size_of::<F>()
}

/// Prints every part's size and budget, then fails for each part over its
/// budget: `(what, bytes, budget)`.
pub(crate) fn within_budgets(sizes: &[(&str, usize, usize)]) {
    for (what, size, budget) in sizes {
        eprintln!("{what}: {size} bytes (budget {budget})");
    }
    for (what, size, budget) in sizes {
        assert!(
            size <= budget,
            "{what}: {size} bytes, over its budget of {budget}"
        );
    }
}

#[test]
fn connection_state_sizes() {
    let task = future_size(serve);
    // (what, bytes, budget)
    let sizes = [
        ("connection task (serve future)", task, 1280),
        ("frame loop (Driver)", size_of::<Driver<'static>>(), 640),
        (
            "upgrade future",
            future_size(
                |a: &'static Rc<WorkerState>, b, c, d: &'static Arc<ServerShared>| {
                    super::upgrade::open(a, b, c, d)
                },
            ),
            1024,
        ),
        (
            "  of which the socket",
            size_of::<WebSocketStream<TcpStream>>(),
            320,
        ),
        ("  of which a hook", size_of::<HookCall>(), 104),
        ("what an upgraded connection holds", size_of::<Open>(), 56),
        ("Client (shared half)", size_of::<Client>(), 176),
        ("Outbox", size_of::<Outbox>(), 88),
        ("ConnLocal (Lua side)", size_of::<ConnLocal>(), 208),
    ];
    within_budgets(&sizes);
}
