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

/// Runs `connmix ARGS` in a fresh folder holding `files`; the exit status
/// and stderr.
fn run_in(files: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let o = connmix(args, dir.path());
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `connmix check -f c.yaml` on `yaml` (plus `files`) fails with exactly
/// `line` on stderr and the exit status of every config problem.
fn assert_config_error(yaml: &str, files: &[(&str, &str)], line: &str) {
    let mut all = vec![("c.yaml", yaml)];
    all.extend_from_slice(files);
    let (code, err) = run_in(&all, &["check", "-f", "c.yaml"]);
    assert_eq!(err.trim_end(), line);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn a_wrong_type_names_file_key_and_position_once() {
    assert_config_error(
        "engine:\n  servers:\n    - port: 7000\n      entry: x.lua\n      readTimeout: soon\n",
        &[("x.lua", "")],
        "error: c.yaml: engine.servers[0].readTimeout: invalid type: string \"soon\", \
         expected u64 (line 5, column 20)",
    );
}

#[test]
fn a_missing_required_value_names_the_key() {
    assert_config_error(
        "engine:\n  servers:\n    - port: 7000\n",
        &[],
        "error: c.yaml: engine.servers[0].entry: required, but missing (line 3, column 7)",
    );
}

#[test]
fn an_indentation_mistake_names_the_block_and_the_line() {
    assert_config_error(
        "engine:\n  apiServer:\n    port: 6789\n   bind: 127.0.0.1\n",
        &[],
        "error: c.yaml: engine.apiServer: YAML syntax: did not find expected key \
         (check the indentation of this line) (line 4, column 4)",
    );
}

#[test]
fn a_value_out_of_range_names_the_key_and_its_line() {
    assert_config_error(
        "logging:\n  level: loud\nengine:\n  servers:\n    - {port: 7000, entry: x.lua}\n",
        &[("x.lua", "")],
        "error: c.yaml: logging.level: unknown level \"loud\"; use debug, info, warn or error \
         (line 2, column 3)",
    );
}

#[test]
fn a_missing_entry_script_is_a_config_error_in_check_and_at_start() {
    let yaml = "engine:\n  servers:\n    - port: 7000\n      entry: nope.lua\n";
    let line = "error: c.yaml: engine.servers[0].entry: cannot read nope.lua: \
                No such file or directory (line 4, column 7)";
    assert_config_error(yaml, &[], line);
    let (code, err) = run_in(&[("c.yaml", yaml)], &["dev", "-f", "c.yaml"]);
    assert_eq!(err.trim_end(), line);
    assert_eq!(code, Some(2));
}

#[test]
fn check_reports_a_broken_script_with_file_and_line() {
    assert_config_error(
        "engine:\n  servers:\n    - port: 7000\n      entry: bad.lua\n",
        &[(
            "bad.lua",
            "function on_message(msg)\n  local x = = 1\nend\n",
        )],
        "error: c.yaml: engine.servers[0].entry: bad.lua:2: unexpected symbol near '=' \
         (line 4, column 7)",
    );
}

/// The shipped layout with a syntax error in the module that holds the
/// shipped logic: `check` fails naming the module's file and line, and
/// `dev` refuses to start instead of answering every client with 500.
#[test]
fn a_broken_module_the_entry_requires_fails_check_and_start() {
    let dir = tempfile::tempdir().unwrap();
    let lua = dir.path().join("lua");
    std::fs::create_dir(&lua).unwrap();
    std::fs::copy(
        repo().join("lua/entry.websocket.lua"),
        lua.join("entry.websocket.lua"),
    )
    .unwrap();
    let module = std::fs::read_to_string(repo().join("lua/message_center.lua")).unwrap();
    let broken = module.replacen("local M = {}", "local M = = {}", 1);
    assert_ne!(
        broken, module,
        "the module still starts with `local M = {{}}`"
    );
    let line = module.lines().position(|l| l == "local M = {}").unwrap() + 1;
    std::fs::write(lua.join("message_center.lua"), broken).unwrap();
    let yaml = "engine:\n  servers:\n    - port: 7000\n      entry: lua/entry.websocket.lua\n";
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    let expected = format!(
        "error: c.yaml: engine.servers[0].entry: lua/message_center.lua:{line}: \
         unexpected symbol near '=' (line 4, column 7)"
    );
    for cmd in ["check", "dev"] {
        let o = connmix(&[cmd, "-f", "c.yaml"], dir.path());
        assert_eq!(
            String::from_utf8_lossy(&o.stderr).trim_end(),
            expected,
            "{cmd}"
        );
        assert_eq!(o.status.code(), Some(2), "{cmd}");
    }
}

#[test]
fn connmix_alone_outside_the_repository_says_what_it_needs() {
    let (code, err) = run_in(&[], &[]);
    assert_eq!(
        err.trim_end(),
        "error: connmix.yaml: cannot read: No such file or directory (os error 2)\n\
         hint: connmix has no built-in config; run it where connmix.yaml and lua/ are \
         (the repository), or pass -f FILE"
    );
    assert_eq!(code, Some(2));
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
