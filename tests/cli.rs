//! The `connmix` command line: `check`, `--help`, `--version`, and start-up
//! failures that must name the problem and exit non-zero.

mod common;

use common::*;
use std::process::{Command, Output};

fn connmix(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connmix"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run connmix")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_accepts_the_shipped_config() {
    let o = connmix(&["check", "-f", "connmix.yaml"], &repo());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ok"));
}

#[test]
fn check_names_the_key_of_a_wrong_type() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        "engine:\n  servers:\n    - port: 7000\n      entry: x.lua\n      readTimeout: soon\n",
    )
    .unwrap();
    let o = connmix(&["check", "-f", f.to_str().unwrap()], dir.path());
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("engine.servers[0].readTimeout"), "{t}");
    assert!(t.contains("c.yaml"), "{t}");
}

#[test]
fn check_names_a_missing_required_value() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(&f, "engine:\n  servers:\n    - port: 7000\n").unwrap();
    let o = connmix(&["check", "-f", f.to_str().unwrap()], dir.path());
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("engine.servers[0]") && t.contains("entry"),
        "{t}"
    );
}

#[test]
fn check_reports_a_broken_script_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.lua"),
        "function on_message(msg)\n  local x = = 1\nend\n",
    )
    .unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        "engine:\n  servers:\n    - port: 7000\n      entry: bad.lua\n",
    )
    .unwrap();
    let o = connmix(&["check", "-f", f.to_str().unwrap()], dir.path());
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("bad.lua:2"), "{t}");
    assert!(t.contains("engine.servers[0].entry"), "{t}");
}

#[test]
fn check_reports_a_missing_script() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        "engine:\n  servers:\n    - port: 7000\n      entry: nope.lua\n",
    )
    .unwrap();
    let o = connmix(&["check", "-f", f.to_str().unwrap()], dir.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("nope.lua"), "{}", text(&o));
}

#[test]
fn help_and_version() {
    let o = connmix(&["--version"], &repo());
    assert!(o.status.success());
    assert!(text(&o).contains(env!("CARGO_PKG_VERSION")));
    let o = connmix(&["--help"], &repo());
    assert!(o.status.success());
    for sub in ["dev", "single", "check"] {
        assert!(text(&o).contains(sub), "{}", text(&o));
    }
}

#[test]
fn a_taken_port_fails_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        format!(
            "engine:\n  apiServer: {{port: {}, bind: 127.0.0.1}}\n  servers:\n    - port: {port}\n      bind: 127.0.0.1\n      entry: {}\n",
            free_port(),
            repo().join("lua/entry.websocket.lua").display()
        ),
    )
    .unwrap();
    let o = connmix(&["dev", "-f", f.to_str().unwrap()], dir.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("engine.servers[0].port"), "{}", text(&o));
}

#[tokio::test]
async fn unknown_keys_warn_and_the_gateway_still_starts() {
    let gw = Gateway::start_with(vec![probe("/p", "")], "", "licenses: [abc]\n").await;
    gw.wait_log("unknown key licenses").await;
    let mut c = Client::connect(&gw.url(0)).await;
    assert_eq!(c.eval("return 2").await["r"], 2);
}
