//! Where a key sits in `connmix.yaml`: line and column of a key path
//! (`engine.servers[0].port`), and the key path around a line (for YAML
//! syntax errors, which the parser reports by position only).
//!
//! A small line-based reading of block YAML (mappings, `- ` sequences,
//! one-line `{k: v}` flow mappings), which is what configs are written in.
//! It only serves error messages: when it cannot place a key, the message
//! goes out without a position rather than with a wrong one.

/// One key or sequence item found in the text: its path, 1-based line and
/// column.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    path: String,
    line: usize,
    column: usize,
}

/// An open container while reading: a key or a sequence item.
struct Frame {
    /// 0-based column of the key or the dash.
    col: usize,
    path: String,
    is_item: bool,
    /// Items seen so far in a sequence under this key.
    items: usize,
}

/// Every key and sequence item of `text`, in file order.
fn nodes(text: &str) -> Vec<Node> {
    let mut out = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    // A block scalar (`key: |`) owns the lines indented deeper than its key.
    let mut block_scalar_col: Option<usize> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let content = raw[indent..].trim_end();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if let Some(c) = block_scalar_col {
            if indent > c {
                continue;
            }
            block_scalar_col = None;
        }
        let mut col = indent;
        let mut rest = content;
        // Sequence items, possibly several on one line (`- - a`).
        while rest == "-" || rest.starts_with("- ") {
            while stack
                .last()
                .is_some_and(|f| f.col > col || (f.col == col && f.is_item))
            {
                stack.pop();
            }
            let parent = stack.last_mut();
            let (path, index) = match parent {
                Some(p) => {
                    p.items += 1;
                    (p.path.clone(), p.items - 1)
                }
                None => (String::new(), 0),
            };
            let path = format!("{path}[{index}]");
            out.push(Node {
                path: path.clone(),
                line,
                column: col + 1,
            });
            stack.push(Frame {
                col,
                path,
                is_item: true,
                items: 0,
            });
            let after = rest[1..].trim_start();
            col += rest.len() - after.len();
            rest = after;
        }
        if rest.starts_with('{') {
            let base = stack.last().map(|f| f.path.clone()).unwrap_or_default();
            flow_keys(rest, &base, line, col, &mut out);
            continue;
        }
        let Some((key, value)) = split_key(rest) else {
            continue;
        };
        while stack.last().is_some_and(|f| f.col >= col) {
            stack.pop();
        }
        let path = match stack.last() {
            Some(p) => format!("{}.{key}", p.path),
            None => key.to_string(),
        };
        out.push(Node {
            path: path.clone(),
            line,
            column: col + 1,
        });
        let value = value.trim_start();
        let value_col = col + rest.len() - value.len();
        if value.starts_with('{') {
            flow_keys(value, &path, line, value_col, &mut out);
        } else if value.starts_with('|') || value.starts_with('>') {
            block_scalar_col = Some(col);
        }
        stack.push(Frame {
            col,
            path,
            is_item: false,
            items: 0,
        });
    }
    out
}

/// `key: value` or `key:` -> (key without quotes, value text).
fn split_key(s: &str) -> Option<(&str, &str)> {
    let (key, value) = if let Some(q) = s.strip_prefix('"').or_else(|| s.strip_prefix('\'')) {
        let quote = s.as_bytes()[0] as char;
        let end = q.find(quote)?;
        let after = q[end + 1..].strip_prefix(':')?;
        (&q[..end], after)
    } else {
        let colon = s.find(':')?;
        let key = &s[..colon];
        if key.is_empty() || key.contains(char::is_whitespace) || key.contains(['{', '[', '#']) {
            return None;
        }
        (key, &s[colon + 1..])
    };
    if !(value.is_empty() || value.starts_with(' ') || value.starts_with('\t')) {
        return None;
    }
    Some((key, value))
}

/// The keys of a one-line flow mapping `{a: 1, b: {c: 2}}` starting at
/// 0-based column `col`.
fn flow_keys(s: &str, base: &str, line: usize, col: usize, out: &mut Vec<Node>) {
    let mut paths = vec![base.to_string()];
    let mut key_start: Option<usize> = None;
    let mut quote: Option<char> = None;
    for (i, ch) in s.char_indices() {
        if let Some(q) = quote {
            if ch == q {
                quote = None;
            }
            continue;
        }
        match ch {
            '{' => key_start = Some(i + 1),
            ',' => key_start = Some(i + 1),
            '}' => {
                paths.pop();
                key_start = None;
            }
            '"' | '\'' => quote = Some(ch),
            ':' => {
                if let Some(start) = key_start.take() {
                    let raw = &s[start..i];
                    let key = raw.trim().trim_matches(['"', '\'']);
                    let lead = raw.len() - raw.trim_start().len();
                    let parent = paths.last().cloned().unwrap_or_default();
                    let path = if parent.is_empty() {
                        key.to_string()
                    } else {
                        format!("{parent}.{key}")
                    };
                    out.push(Node {
                        path: path.clone(),
                        line,
                        column: col + start + lead + 1,
                    });
                    if s[i + 1..].trim_start().starts_with('{') {
                        paths.push(path);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Line and column (1-based) of `path`, or of the nearest enclosing key or
/// item that the file has (a missing key is reported where its parent is).
pub(super) fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let all = nodes(text);
    let mut p = path;
    loop {
        if let Some(n) = all.iter().find(|n| n.path == p) {
            return Some((n.line, n.column));
        }
        let cut = p.rfind(['.', '['])?;
        p = &p[..cut];
        if p.is_empty() {
            return None;
        }
    }
}

/// The key path whose block holds position `line`/`column` (1-based): the
/// last key above that line that is indented less than the column.
pub(super) fn key_at(text: &str, line: usize, column: usize) -> Option<String> {
    nodes(text)
        .into_iter()
        .rev()
        .find(|n| n.line < line && n.column < column)
        .map(|n| n.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const Y: &str = "\
# comment
logging:
  level: info
engine:
  apiServer: {port: 6789, bind: 127.0.0.1}
  servers:
    - port: 6790
      options:
        - name: path
          value: /chat
      entry: a.lua
    - {port: 7000, entry: b.lua}
  cluster:
    addr: x
";

    #[test]
    fn finds_keys_items_and_flow_keys() {
        assert_eq!(locate(Y, "logging.level"), Some((3, 3)));
        assert_eq!(locate(Y, "engine.apiServer.bind"), Some((5, 27)));
        assert_eq!(locate(Y, "engine.servers[0]"), Some((7, 5)));
        assert_eq!(locate(Y, "engine.servers[0].entry"), Some((11, 7)));
        assert_eq!(
            locate(Y, "engine.servers[0].options[0].value"),
            Some((10, 11))
        );
        assert_eq!(locate(Y, "engine.servers[1].entry"), Some((12, 20)));
        assert_eq!(locate(Y, "engine.cluster.addr"), Some((14, 5)));
    }

    #[test]
    fn a_missing_key_points_at_its_parent() {
        assert_eq!(locate(Y, "engine.servers[1].readTimeout"), Some((12, 5)));
        assert_eq!(locate(Y, "access.users"), None);
    }

    #[test]
    fn indentless_sequences_count_items() {
        let y = "engine:\n  servers:\n  - port: 1\n    entry: a\n  - port: 2\n";
        assert_eq!(locate(y, "engine.servers[1].port"), Some((5, 5)));
    }

    #[test]
    fn key_at_names_the_enclosing_block() {
        let y = "engine:\n  apiServer:\n    port: 6789\n   bind: x\n";
        assert_eq!(key_at(y, 4, 4).as_deref(), Some("engine.apiServer"));
    }
}
