//! The `engine.history` list of `connmix.yaml`: which channels keep a
//! history of their publications, how many, for how long (reference:
//! `docs/config.md`, "History and recovery" in the README).

use serde::Deserialize;

/// The most publications one channel may keep (`historySize`).
pub const MAX_HISTORY_SIZE: usize = 10_000;

/// One `engine.history[]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryConfig {
    /// A glob over channel names (`*` any run of characters, `?` one):
    /// `user:*`. The first entry that matches a channel applies.
    pub channels: String,
    /// Publications kept per channel (the oldest are dropped first).
    pub history_size: usize,
    /// Seconds a publication stays in history.
    pub history_ttl: u64,
    /// Seconds a channel's position (top offset, epoch) outlives its last
    /// publish; past it the channel starts over with a new epoch.
    #[serde(default = "default_meta_ttl")]
    pub meta_ttl: u64,
}

fn default_meta_ttl() -> u64 {
    86_400
}

/// Whether `name` matches the glob `pattern` (`*`: any run, `?`: one char).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and the name position it currently covers to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The first entry of `list` whose glob matches `ch`.
pub fn policy_for<'a>(list: &'a [HistoryConfig], ch: &str) -> Option<&'a HistoryConfig> {
    list.iter().find(|h| glob_match(&h.channels, ch))
}

/// Checks each entry; the error is `(key path, message)`.
pub fn validate(list: &[HistoryConfig]) -> Result<(), (String, String)> {
    for (i, h) in list.iter().enumerate() {
        let key = |k: &str| format!("engine.history[{i}].{k}");
        if h.channels.trim().is_empty() || h.channels.contains(char::is_whitespace) {
            return Err((
                key("channels"),
                format!(
                    "must be a channel glob without spaces (e.g. 'user:*'), got {:?}",
                    h.channels
                ),
            ));
        }
        if let Some(j) = list[..i].iter().position(|o| o.channels == h.channels) {
            return Err((
                key("channels"),
                format!("{:?} is already used by engine.history[{j}]", h.channels),
            ));
        }
        if h.history_size == 0 || h.history_size > MAX_HISTORY_SIZE {
            return Err((
                key("historySize"),
                format!(
                    "must be between 1 and {MAX_HISTORY_SIZE}, got {}",
                    h.history_size
                ),
            ));
        }
        if h.history_ttl == 0 {
            return Err((key("historyTtl"), "must be at least 1 second".into()));
        }
        if h.meta_ttl < h.history_ttl {
            return Err((
                key("metaTtl"),
                format!(
                    "must be at least historyTtl ({}): the position must outlive the publications",
                    h.history_ttl
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("user:*", "user:1001"));
        assert!(glob_match("user:*", "user:"));
        assert!(!glob_match("user:*", "users:1"));
        assert!(glob_match("*:news", "sport:news"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
    }

    fn entry(channels: &str, size: usize, ttl: u64, meta: u64) -> HistoryConfig {
        HistoryConfig {
            channels: channels.into(),
            history_size: size,
            history_ttl: ttl,
            meta_ttl: meta,
        }
    }

    #[test]
    fn each_mistake_names_its_key() {
        let bad = |l: Vec<HistoryConfig>| validate(&l).unwrap_err().0;
        assert_eq!(bad(vec![entry("", 1, 1, 1)]), "engine.history[0].channels");
        assert_eq!(
            bad(vec![entry("a*", 1, 1, 1), entry("a*", 1, 1, 1)]),
            "engine.history[1].channels"
        );
        assert_eq!(
            bad(vec![entry("a*", 0, 1, 1)]),
            "engine.history[0].historySize"
        );
        assert_eq!(
            bad(vec![entry("a*", MAX_HISTORY_SIZE + 1, 1, 1)]),
            "engine.history[0].historySize"
        );
        assert_eq!(
            bad(vec![entry("a*", 1, 0, 1)]),
            "engine.history[0].historyTtl"
        );
        assert_eq!(
            bad(vec![entry("a*", 1, 10, 5)]),
            "engine.history[0].metaTtl"
        );
        assert!(validate(&[entry("user:*", 100, 300, 86_400)]).is_ok());
        let list = [entry("user:*", 1, 1, 1), entry("*", 2, 1, 1)];
        assert_eq!(policy_for(&list, "user:1").unwrap().history_size, 1);
        assert_eq!(policy_for(&list, "x").unwrap().history_size, 2);
    }
}
