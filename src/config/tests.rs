//! Tests of the config loader: defaults, mistakes named by their key,
//! unknown keys collected, Redis connections and ports checked.

use super::*;

fn parse(y: &str) -> Result<Config, ConfigError> {
    Config::parse(y, Path::new("t.yaml"))
}

const MIN: &str = "engine:\n  servers:\n    - port: 7000\n      entry: lua/entry.websocket.lua\n";

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MIN).unwrap();
    assert_eq!(c.engine.api_server.port, 6789);
    assert_eq!(c.engine.servers[0].read_buffer_size, 1024);
    assert_eq!(c.engine.servers[0].path(), "/");
}

#[test]
fn wrong_type_names_the_key() {
    let e = parse("engine:\n  servers:\n    - port: abc\n      entry: x.lua\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("engine.servers[0].port"), "{e}");
    assert!(e.starts_with("t.yaml"), "{e}");
}

#[test]
fn missing_entry_names_the_server() {
    let e = parse("engine:\n  servers:\n    - port: 7000\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("engine.servers[0]") && e.contains("entry"),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_collected_not_fatal() {
    let c = parse(&format!("licenses: []\n{MIN}")).unwrap();
    assert_eq!(c.unknown_keys, vec!["licenses".to_string()]);
}

#[test]
fn option_values_may_be_numbers() {
    let c = parse("engine:\n  servers:\n    - port: 7000\n      entry: x.lua\n      options:\n        - {name: n, value: 5}\n").unwrap();
    assert_eq!(c.engine.servers[0].option("n"), Some("5"));
}

#[test]
fn redis_connections_are_checked() {
    let base = "engine:\n  servers:\n    - {port: 7000, entry: a.lua}\n  luavm:\n    redis:\n";
    let c = parse(&format!(
        "{base}      - {{name: default, addr: 'localhost:6379'}}\n"
    ))
    .unwrap();
    let r = &c.engine.luavm.redis[0];
    assert_eq!((r.db, r.pool_size), (0, 20));
    assert_eq!((r.connect_timeout, r.command_timeout), (1.0, 5.0));
    let e = parse(&format!(
        "{base}      - {{name: a, addr: 'h:1'}}\n      - {{name: a, addr: 'h:2'}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("engine.luavm.redis[1].name"), "{e}");
    let e = parse(&format!("{base}      - {{name: a, addr: ''}}\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("engine.luavm.redis[0].addr"), "{e}");
    let e = parse(&format!(
        "{base}      - {{name: a, addr: 'h:1', poolSize: 0}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("engine.luavm.redis[0].poolSize"), "{e}");
}

#[test]
fn duplicate_ports_are_refused() {
    let e = parse(
        "engine:\n  servers:\n    - {port: 7000, entry: a.lua}\n    - {port: 7000, entry: b.lua}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("engine.servers[1].port"), "{e}");
}
