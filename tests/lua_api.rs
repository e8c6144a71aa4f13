//! The `mix` and `conn` Lua API of `docs/lua-api.md`, exercised from real
//! connections through the probe script (each frame is run as Lua in the
//! connection's environment).

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn mix_utilities() {
    let gw = Gateway::start(vec![probe("/p", "").option("color", "blue")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    let e = |code: &'static str| code;

    let v = c
        .eval(e(
            r#"return mix.json_encode({uid = 1001, name = "a\"b", list = {1, 2.5}})"#,
        ))
        .await;
    let parsed: serde_json::Value = serde_json::from_str(v["r"].as_str().unwrap()).unwrap();
    assert_eq!(
        parsed,
        json!({"uid": 1001, "name": "a\"b", "list": [1, 2.5]})
    );

    let v = c
        .eval(r#"local t = mix.json_decode('{"a":null,"n":7,"s":"x","l":[true]}') return {a_is_nil = t.a == nil, n = t.n + 1, s = t.s, l = t.l[1]}"#)
        .await;
    assert_eq!(
        v["r"],
        json!({"a_is_nil": true, "n": 8, "s": "x", "l": true})
    );
    let v = c.eval(r#"return mix.json_decode("{bad")"#).await;
    assert!(v["r"].is_null() && v["e"].is_string(), "{v}");

    let v = c
        .eval(r#"return mix.base64_decode(mix.base64_encode("hi\0there"))"#)
        .await;
    assert_eq!(v["r"], "hi\u{0}there");
    let v = c.eval(r#"return mix.base64_decode("***")"#).await;
    assert!(v["e"].is_string(), "{v}");

    let v = c
        .eval(r#"local t = mix.str_split("@user", "@") return {n = table.getn(t), a = t[1], b = t[2]}"#)
        .await;
    assert_eq!(v["r"], json!({"n": 2, "a": "", "b": "user"}));

    let v = c
        .eval(r#"return mix.parse_str("a=1&b=x%20y&c[]=1&c[]=2")"#)
        .await;
    assert_eq!(v["r"], json!({"a": "1", "b": "x y", "c": ["1", "2"]}));
    let v = c
        .eval(r#"return mix.parse_url("https://h.example:8443/p/q?x=1&y=2#frag")"#)
        .await;
    assert_eq!(
        v["r"],
        json!({"scheme": "https", "host": "h.example:8443", "path": "/p/q", "raw_query": "x=1&y=2", "fragment": "frag", "query": {"x": "1", "y": "2"}})
    );

    let v = c
        .eval(r#"return {md5 = mix.md5("abc"), sha1 = mix.sha1("abc"), md5_len = string.len(mix.md5_bin("abc")), sha1_len = string.len(mix.sha1_bin("abc"))}"#)
        .await;
    assert_eq!(
        v["r"],
        json!({"md5": "900150983cd24fb0d6963f7d28e17f72", "sha1": "a9993e364706816aba3e25717850c26c9cd0d89d", "md5_len": 16, "sha1_len": 20})
    );
    let v = c.eval("return mix.bytes_tostring({104, 105})").await;
    assert_eq!(v["r"], "hi");
    let v = c
        .eval(r#"return mix.log(mix.INFO, "hello from lua")"#)
        .await;
    assert_eq!(v["r"], true);
    gw.wait_log("hello from lua").await;
    let v = c
        .eval(r#"return {color = mix.server.option("color"), path = mix.server.option("path"), none = mix.server.option("nope")}"#)
        .await;
    assert_eq!(v["r"], json!({"color": "blue", "path": "/p"}));
    let v = c
        .eval("local conn = ... return mix.websocket():client_id() == conn:client_id()")
        .await;
    assert_eq!(v["r"], true);
}

#[tokio::test]
async fn conn_methods() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    let id = c.id().await;
    assert!(id.chars().all(|ch| ch.is_ascii_digit()), "{id}");

    let v = c.eval("return (...):remote_addr()").await;
    assert!(v["r"].as_str().unwrap().starts_with("127.0.0.1:"), "{v}");

    let v = c
        .eval(r#"local conn = ... conn:set_context_value("uid", 42) return {one = conn:context_value("uid"), all = conn:context()}"#)
        .await;
    assert_eq!(v["r"], json!({"one": 42, "all": {"uid": 42}}));
    let v = c
        .eval(r#"local conn = ... conn:set_context({room = "r1"}) return {uid = conn:context_value("uid"), room = conn:context_value("room")}"#)
        .await;
    assert_eq!(v["r"], json!({"room": "r1"}), "set_context replaces");

    let v = c.eval(r#"return (...):subscribe("a", "b", "c")"#).await;
    assert!(v["e"].is_null() && v["r"].is_null(), "{v}");
    for ch in ["a", "b", "c"] {
        assert_eq!(gw.publish(ch, ch).await, (1, 0));
        assert_eq!(c.recv().await, ch);
    }
    let v = c.eval(r#"return (...):unsubscribe("a", "b")"#).await;
    assert!(v["r"].is_null(), "{v}");
    assert_eq!(gw.publish("a", "x").await, (0, 0));
    assert_eq!(gw.publish("c", "still c").await, (1, 0));
    assert_eq!(c.recv().await, "still c");
    let v = c.eval(r#"return (...):subscribe("has space")"#).await;
    assert!(v["r"].as_str().unwrap().contains("invalid channel"), "{v}");

    // send text and binary; a binary frame reaches on_message as binary.
    c.send(r#"local conn = ... conn:send("plain") conn:send("\1\2", "binary") return true"#)
        .await;
    assert_eq!(c.recv().await, "plain");
    assert_eq!(
        c.next().await,
        tokio_tungstenite::tungstenite::Message::binary(vec![1u8, 2])
    );
    assert_eq!(c.recv_json().await["r"], true);
    c.send_msg(tokio_tungstenite::tungstenite::Message::binary(vec![7u8]))
        .await;
    assert_eq!(
        c.next().await,
        tokio_tungstenite::tungstenite::Message::binary(b"binary:\x07".to_vec())
    );

    // close: a normal close frame.
    c.send("(...):close()").await;
    assert_eq!(c.closed().await.map(|(code, _)| code), Some(1000));
}

#[tokio::test]
async fn globals_belong_to_their_connection() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut a = Client::connect(&gw.url(0)).await;
    let mut b = Client::connect(&gw.url(0)).await;
    let bump = "counter = (counter or 0) + 1 return counter";
    assert_eq!(a.eval(bump).await["r"], 1);
    assert_eq!(a.eval(bump).await["r"], 2);
    assert_eq!(b.eval(bump).await["r"], 1, "b does not see a's global");
    // The script's own top-level globals are per connection too.
    assert_eq!(
        a.eval("on_message_seen = true return rawget(_G, 'counter') == nil")
            .await["r"],
        true
    );
}

#[tokio::test]
async fn http_request_options_and_response() {
    let auth = AuthServer::start().await;
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    let url = format!("http://127.0.0.1:{}/echo?pre=1", auth.port);
    let code = format!(
        r#"local resp, err = mix.http.request("PUT", "{url}", {{
            query = "q=2",
            headers = {{ ["X-Test"] = "yes" }},
            cookies = {{ sid = "s1" }},
            body = "payload",
            timeout = "5s",
            auth = {{ username = "u", password = "p" }},
        }})
        if err then return nil, err end
        return {{ status = resp.status_code, size = resp.body_size, body = mix.json_decode(resp.body),
                 ctype = resp.headers["Content-Type"], cookie = resp.cookies.session, url = resp.url }}"#
    );
    let v = c.eval(&code).await;
    let r = &v["r"];
    assert_eq!(r["status"], 200, "{v}");
    assert_eq!(r["ctype"], "application/json");
    assert_eq!(r["cookie"], "abc123");
    assert_eq!(r["url"], format!("{url}&q=2"));
    let echo = &r["body"];
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["uri"], "/echo?pre=1&q=2");
    assert_eq!(echo["body"], "payload");
    assert_eq!(echo["headers"]["x-test"], "yes");
    assert_eq!(echo["headers"]["cookie"], "sid=s1");
    assert_eq!(echo["headers"]["authorization"], "Basic dTpw");
    assert!(r["size"].as_u64().unwrap() > 10);

    // Failures are values, not errors.
    let slow = format!("http://127.0.0.1:{}/slow", auth.port);
    let v = c
        .eval(&format!(
            r#"return mix.http.request("GET", "{slow}", {{timeout = 0.2}})"#
        ))
        .await;
    assert!(v["r"].is_null());
    assert!(v["e"].as_str().unwrap().contains("timeout"), "{v}");
    let dead = free_port();
    let v = c
        .eval(&format!(
            r#"return mix.http.request("GET", "http://127.0.0.1:{dead}/")"#
        ))
        .await;
    assert!(v["r"].is_null() && v["e"].is_string(), "{v}");
    let v = c
        .eval(r#"return mix.http.request("GET", "not a url")"#)
        .await;
    assert!(v["e"].as_str().unwrap().contains("invalid url"), "{v}");
}

#[tokio::test]
async fn mesh_from_lua() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut a = Client::connect(&gw.url(0)).await;
    let mut b = Client::connect(&gw.url(0)).await;
    b.eval("return (...):subscribe('room')").await;
    let v = a
        .eval("local s, f = mix.mesh.publish('room', 'from lua') return {s = s, f = f}")
        .await;
    assert_eq!(v["r"], json!({"s": 1, "f": 0}));
    assert_eq!(b.recv().await, "from lua");

    let b_id = b.id().await;
    let v = a
        .eval(&format!("return mix.mesh.send('{b_id}', 'direct')"))
        .await;
    assert!(v["r"].is_null(), "no error: {v}");
    assert_eq!(b.recv().await, "direct");
    let v = a.eval("return mix.mesh.send('999', 'x')").await;
    assert!(v["r"].as_str().unwrap().contains("not found"), "{v}");
}

#[tokio::test]
async fn wait_context_value_times_out_with_nil_timeout() {
    let gw = Gateway::start_with(
        vec![probe("/p", "")],
        "  luavm:\n    waitContextTimeout: 1\n",
        "",
    )
    .await;
    let mut c = Client::connect(&gw.url(0)).await;
    let v = c.eval("return (...):wait_context_value('never')").await;
    assert_eq!(v, json!({"e": "timeout"}));
    // Set by the script itself: returns at once.
    let v = c
        .eval(
            "local conn = ... conn:set_context_value('k', 'v') return conn:wait_context_value('k')",
        )
        .await;
    assert_eq!(v["r"], "v");
}

const FAILING: &str = r#"
function on_message(msg, conn)
    if msg.data == "boom" then
        error("boom requested")
    end
    if msg.data == "nil" then
        local t = nil
        return t.field
    end
    if msg.data == "spin" then
        while true do end
    end
    conn:send("alive:" .. msg.data)
end
"#;

#[tokio::test]
async fn a_lua_error_is_logged_with_file_line_and_client_and_nothing_else_breaks() {
    let gw = Gateway::start(vec![ServerSpec::new("/f", Script::Inline(FAILING.into()))]).await;
    let mut bad = Client::connect(&gw.url(0)).await;
    let mut good = Client::connect(&gw.url(0)).await;
    bad.send("boom").await;
    bad.send("nil").await;
    bad.send("after").await;
    assert_eq!(
        bad.recv().await,
        "alive:after",
        "the failing connection stays usable"
    );
    good.send("hello").await;
    assert_eq!(good.recv().await, "alive:hello");
    let log = gw.wait_log("boom requested").await;
    let line = log.lines().find(|l| l.contains("boom requested")).unwrap();
    assert!(line.contains("entry0.lua:4"), "file and line: {line}");
    assert!(line.contains("client_id="), "client id: {line}");
    let log = gw.wait_log("attempt to index").await;
    let line = log
        .lines()
        .find(|l| l.contains("attempt to index"))
        .unwrap();
    assert!(line.contains("entry0.lua:8"), "{line}");
}

#[tokio::test]
async fn a_runaway_hook_is_aborted_and_others_keep_receiving() {
    let gw = Gateway::start_with(
        vec![ServerSpec::new("/f", Script::Inline(FAILING.into()))],
        "  workers: 1\n  luavm:\n    hookTimeoutMs: 200\n",
        "",
    )
    .await;
    let mut spinner = Client::connect(&gw.url(0)).await;
    let mut other = Client::connect(&gw.url(0)).await;
    // Same worker (workers: 1), so a frozen VM would starve `other`.
    spinner.send("spin").await;
    other.send("ping1").await;
    assert_eq!(other.recv().await, "alive:ping1");
    let log = gw.wait_log("hook aborted").await;
    let line = log.lines().find(|l| l.contains("hook aborted")).unwrap();
    assert!(line.contains("entry0.lua:11"), "{line}");
    assert!(line.contains("client_id="), "{line}");
    // The spinning connection survives its aborted hook.
    spinner.send("again").await;
    assert_eq!(spinner.recv().await, "alive:again");
}

#[tokio::test]
async fn connmix_scripts_can_require_prettyprint() {
    let gw = Gateway::start(vec![probe("/p", "require(\"prettyprint\")")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    let v = c
        .eval(r#"print({a = 1}) return require("prettyprint").dump({"x"})"#)
        .await;
    assert_eq!(v["r"], r#"{[1] = "x"}"#);
    gw.wait_log(r#"{["a"] = 1}"#).await;
}
