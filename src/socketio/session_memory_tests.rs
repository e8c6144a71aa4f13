//! What an open Socket.IO session keeps in its task, by part (README
//! "Socket.IO" quotes the idle memory per client; these are what a change
//! adds), each within a budget as the WebSocket connection's parts are
//! (`ws/memory_tests.rs`).

use super::*;
use crate::ws::memory_tests::{future_size, future_size2, within_budgets};

/// A change that needs more than a budget raises it here and says what the
/// idle figure became.
#[test]
fn session_state_sizes() {
    // (what, bytes, budget)
    let sizes = [
        (
            "connection task (http::serve future)",
            future_size(super::super::http::serve),
            160,
        ),
        ("session (run future)", future_size2(Session::run), 1792),
        ("Session", std::mem::size_of::<Session>(), 152),
        ("loop state", std::mem::size_of::<Loop>(), 760),
        ("  of which one WebSocket", std::mem::size_of::<Ws>(), 328),
        ("SessionIo", std::mem::size_of::<events::SessionIo>(), 184),
    ];
    within_budgets(&sizes);
}
