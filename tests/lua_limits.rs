//! No script can take the gateway down (issue 12, items 4-8): values that
//! used to panic, endless `mix.http` bodies, memory hoarding, CPU loops
//! that catch their own abort, C and Rust helpers that never return,
//! coroutine nesting, bytecode and `os.exit`. Each case runs in the real
//! binary through real connections; "the worker survives" is shown by
//! another connection of the same worker (`workers: 1`) being answered.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The script under test: each text frame names a case to run; anything
/// else is answered with `alive:<frame>`.
const LIMITS_LUA: &str = r#"
local cases = {}
cases.id = function(conn)
    return conn:client_id()
end
local bad_timeouts = { 1e300, "inf", "1e300", 2^64, "99999999999999999999h", -1, 0/0 }
cases.timeouts = function()
    local errs = {}
    for i, t in ipairs(bad_timeouts) do
        local resp, err = mix.http.request("GET", mix.server.option("ok_url"), { timeout = t })
        if resp ~= nil or type(err) ~= "string" then
            return "timeout " .. tostring(t) .. " gave no error"
        end
        errs[#errs + 1] = err
    end
    return #errs
end
cases.endless = function()
    local resp, err = mix.http.request("GET", mix.server.option("endless_url"), { timeout = 60 })
    return resp, err
end
cases.hoard = function()
    local t = {}
    for i = 1, 100000 do
        t[#t + 1] = string.rep("x", 1048576 - 8) .. string.format("%08d", i)
        if i % 8 == 0 then
            mix.http.request("GET", mix.server.option("ok_url"))
        end
    end
    return #t
end
cases.rep = function()
    local s = string.rep("x", 2^30)
    return #s
end
cases.pcall_loop = function()
    while true do
        pcall(function() while true do end end)
    end
end
cases.xpcall_loop = function()
    while true do
        xpcall(function() while true do end end, function(e) return e end)
    end
end
cases.resume_loop = function()
    while true do
        coroutine.resume(coroutine.create(function() while true do end end))
    end
end
cases.pattern = function()
    local found = string.find(string.rep("a", 20000), "(.-)(.-)(.-)b")
    return found
end
cases.json = function()
    local t = {}
    for i = 1, 40 do
        t = { t, t }
    end
    local json, err = mix.json_encode(t)
    return json, err
end
cases.nest = function()
    local function nest(n)
        if n == 0 then
            return "bottom"
        end
        return coroutine.wrap(function() return nest(n - 1) end)()
    end
    return nest(32000)
end
cases.bytecode = function()
    local bc = string.dump(function(a) return a + 1 end)
    local bad = bc:sub(1, 12) .. string.rep("\255", 48) .. bc:sub(61)
    local f1, e1 = load(bad)
    local f2, e2 = loadstring(bad)
    local f3, e3 = load(bad, "x", "b")
    if f1 or f2 or f3 then
        return "bytecode was loaded"
    end
    return e1 .. "|" .. e2 .. "|" .. e3
end
cases.exit = function()
    os.exit(3)
    return "still here"
end
cases.system = function()
    local refused = {}
    for _, f in ipairs({ function() return os.execute("true") end,
                         function() return io.popen("true") end,
                         function() return io.open("/etc/hostname") end }) do
        local ok, err = pcall(f)
        refused[#refused + 1] = (not ok) and tostring(err) or "ALLOWED"
    end
    return table.concat(refused, "|")
end

function on_message(msg, conn)
    local case = cases[msg.data]
    if not case then
        conn:send("alive:" .. msg.data)
        return
    end
    local a, b = case(conn)
    conn:send(msg.data .. ":" .. tostring(a) .. ":" .. tostring(b))
end

function on_close(id)
    mix.log(mix.INFO, "on_close ran for " .. id)
end
"#;

/// A tiny real HTTP server: `/ok` answers at once, `/endless` sends a
/// chunked body that never ends.
async fn backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if req.starts_with(b"GET /endless") {
                    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = format!("10000\r\n{}\r\n", "y".repeat(0x10000));
                    while sock.write_all(chunk.as_bytes()).await.is_ok() {}
                } else {
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                }
            });
        }
    });
    format!("http://{addr}")
}

/// One worker (so every connection shares the VM), a 200 ms budget.
async fn gateway(extra_luavm: &str) -> Gateway {
    let url = backend().await;
    let spec = ServerSpec::new("/l", Script::Inline(LIMITS_LUA.into()))
        .option("ok_url", &format!("{url}/ok"))
        .option("endless_url", &format!("{url}/endless"));
    Gateway::start_with(
        vec![spec],
        &format!("  workers: 1\n  luavm:\n    hookTimeoutMs: 200\n{extra_luavm}"),
        "",
    )
    .await
}

/// `other` (same worker) is answered, so the worker is not blocked.
async fn assert_answered(gw: &Gateway, other: &mut Client, tag: &str) {
    other.send(tag).await;
    let reply = tokio::time::timeout(DEADLINE, other.recv())
        .await
        .unwrap_or_else(|_| panic!("{tag:?} not answered; log:\n{}", gw.log()));
    assert_eq!(reply, format!("alive:{tag}"));
}

/// The log line of the first Lua error containing `needle`.
async fn error_line(gw: &Gateway, needle: &str) -> String {
    let log = gw.wait_log(needle).await;
    log.lines()
        .find(|l| l.contains(needle) && l.contains("lua error"))
        .unwrap_or_else(|| panic!("no lua error line with {needle:?}:\n{log}"))
        .to_string()
}

/// The line of `LIMITS_LUA` that contains `code`, as `entry0.lua:<n>`.
fn script_line(code: &str) -> String {
    let n = LIMITS_LUA.lines().position(|l| l.contains(code)).unwrap() + 1;
    format!("entry0.lua:{n}")
}

#[tokio::test]
async fn timeouts_that_used_to_panic_return_nil_err_and_on_close_still_runs() {
    let gw = gateway("").await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("id").await;
    let id = c.recv().await;
    let id = id
        .strip_prefix("id:")
        .unwrap()
        .trim_end_matches(":nil")
        .to_string();
    c.send("timeouts").await;
    assert_eq!(
        c.recv().await,
        "timeouts:7:nil",
        "each bad timeout is nil, err"
    );
    assert_answered(&gw, &mut c, "still usable").await;
    c.close().await;
    gw.wait_log(&format!("on_close ran for {id}")).await;
}

#[tokio::test]
async fn an_endless_http_body_is_cut_at_the_limit_and_rss_stays_bounded() {
    let gw = gateway("    http:\n      maxBodySize: 1048576\n").await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("endless").await;
    let reply = c.recv().await;
    assert!(
        reply.starts_with("endless:nil:") && reply.contains("maxBodySize"),
        "{reply}"
    );
    let rss = rss_bytes(gw.pid());
    eprintln!("gateway RSS: {} MiB", rss >> 20);
    assert!(rss < 512 << 20, "RSS {} MiB", rss >> 20);
    assert_answered(&gw, &mut c, "after").await;
}

#[tokio::test]
async fn a_hoarding_script_is_stopped_by_the_memory_limit() {
    // Default memoryLimit (256 MiB).
    let gw = gateway("").await;
    let mut hoarder = Client::connect(&gw.url(0)).await;
    let mut other = Client::connect(&gw.url(0)).await;
    hoarder.send("hoard").await;
    let line = error_line(&gw, "not enough memory").await;
    assert!(
        // The line, or (out of memory inside a C function) where the
        // function that called it starts.
        line.contains(&script_line("string.rep(\"x\", 1048576"))
            || line.contains(&script_line("cases.hoard = function")),
        "{line}\n{}",
        gw.log()
    );
    assert!(line.contains("client_id="), "{line}");
    let rss = rss_bytes(gw.pid());
    eprintln!("gateway RSS: {} MiB", rss >> 20);
    assert!(rss < 1 << 30, "RSS {} MiB", rss >> 20);
    assert_answered(&gw, &mut other, "other").await;
    assert_answered(&gw, &mut hoarder, "hoarder too").await;
}

#[tokio::test]
async fn a_gigabyte_string_rep_is_refused() {
    let gw = gateway("").await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("rep").await;
    let line = error_line(&gw, "not enough memory").await;
    assert!(line.contains(&script_line("2^30")), "{line}");
    assert_answered(&gw, &mut c, "after").await;
    let rss = rss_bytes(gw.pid());
    eprintln!("gateway RSS: {} MiB", rss >> 20);
    assert!(rss < 1 << 30, "RSS {} MiB", rss >> 20);
}

#[tokio::test]
async fn pcall_xpcall_and_resume_cannot_swallow_the_budget() {
    let gw = gateway("").await;
    let mut other = Client::connect(&gw.url(0)).await;
    for case in ["pcall_loop", "xpcall_loop", "resume_loop"] {
        let mut spinner = Client::connect(&gw.url(0)).await;
        spinner.send(case).await;
        assert_answered(&gw, &mut other, &format!("while {case}")).await;
        // The spinner's hook ended (it is answered again).
        assert_answered(&gw, &mut spinner, &format!("{case} again")).await;
    }
    let log = gw.log();
    let aborted = log
        .lines()
        .filter(|l| l.contains("lua error") && l.contains("hook aborted"))
        .count();
    assert_eq!(aborted, 3, "{log}");
}

#[tokio::test]
async fn a_backtracking_pattern_and_a_shared_subtable_json_encode_are_stopped() {
    let gw = gateway("").await;
    let mut other = Client::connect(&gw.url(0)).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("pattern").await;
    assert_answered(&gw, &mut other, "during pattern").await;
    let line = error_line(&gw, "string.find: hook aborted").await;
    assert!(line.contains(&script_line("(.-)(.-)(.-)b")), "{line}");
    assert_answered(&gw, &mut c, "after pattern").await;

    c.send("json").await;
    c.send("after json").await;
    assert_answered(&gw, &mut other, "during json").await;
    // Stopped by jsonMaxSize (a reply) or by the budget (no reply, logged),
    // whichever comes first; either way before `after json` is answered.
    let reply = c.recv().await;
    if reply == "alive:after json" {
        gw.wait_log("mix.json_encode: hook aborted").await;
    } else {
        assert!(
            reply.starts_with("json:nil:") && reply.contains("jsonMaxSize"),
            "{reply}"
        );
        assert_eq!(c.recv().await, "alive:after json");
    }
}

#[tokio::test]
async fn a_json_encode_over_the_budget_is_aborted() {
    // A size limit too large to be reached within the budget.
    let gw = gateway("    jsonMaxSize: 100000000000\n").await;
    let mut other = Client::connect(&gw.url(0)).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("json").await;
    assert_answered(&gw, &mut other, "during json").await;
    error_line(&gw, "mix.json_encode: hook aborted").await;
    assert_answered(&gw, &mut c, "after json").await;
}

#[tokio::test]
async fn nested_coroutines_and_corrupted_bytecode_are_lua_errors() {
    let gw = gateway("").await;
    let mut other = Client::connect(&gw.url(0)).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("nest").await;
    error_line(&gw, "coroutines nested deeper than 200").await;
    assert_answered(&gw, &mut other, "after nest").await;
    c.send("bytecode").await;
    let reply = c.recv().await;
    assert!(reply.starts_with("bytecode:"), "{reply}");
    assert_eq!(reply.matches("binary chunk").count(), 3, "{reply}");
    assert_answered(&gw, &mut other, "after bytecode").await;
}

#[tokio::test]
async fn os_exit_and_system_access_are_refused() {
    let mut gw = gateway("").await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("exit").await;
    error_line(&gw, "os.exit is not available").await;
    assert_answered(&gw, &mut c, "after exit").await;
    c.send("system").await;
    let reply = c.recv().await;
    assert_eq!(reply.matches("systemAccess is false").count(), 3, "{reply}");
    assert!(!reply.contains("ALLOWED"), "{reply}");
    let status = gw.terminate();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn system_access_can_be_granted() {
    let gw = gateway("    systemAccess: true\n").await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("system").await;
    let reply = c.recv().await;
    assert!(!reply.contains("systemAccess is false"), "{reply}");
    // os.exit stays refused.
    c.send("exit").await;
    error_line(&gw, "os.exit is not available").await;
    assert_answered(&gw, &mut c, "after exit").await;
}
