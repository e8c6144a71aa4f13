//! Lua 5.1 patterns, matched as LuaJIT's string library matches them, but
//! in Rust and under the CPU budget: a backtracking match (`(.-)(.-)(.-)x`
//! on a 20,000-byte subject takes hours) ticks a [`Ticker`] at every step
//! and is aborted once the hook's poll is over budget. LuaJIT's own C
//! matcher never runs the count hook, so it would block the worker.
//!
//! Semantics follow lstrlib.c of Lua 5.1 (character classes are ASCII, as
//! in LuaJIT): `.`, `%a %c %d %l %p %s %u %w %x %z` and their complements,
//! sets `[...]`/`[^...]` with ranges, `* + - ?`, anchors, captures and
//! position captures, back references `%1`-`%9`, `%b()` and `%f[set]`.

use super::budget::Ticker;

/// Captures a pattern may have (Lua's `LUA_MAXCAPTURES`).
pub const MAX_CAPTURES: usize = 32;
/// Nesting of the matcher's recursion (LuaJIT's `LJ_MAX_XLEVEL`).
const MAX_DEPTH: usize = 200;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CapLen {
    Unfinished,
    Position,
    Len(usize),
}

#[derive(Clone, Copy, Debug)]
struct Capture {
    init: usize,
    len: CapLen,
}

/// One capture's value: a slice of the subject or a position (1-based).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Captured {
    Span(usize, usize),
    Position(usize),
}

type R<T> = mlua::Result<T>;

fn fail<T>(msg: &str) -> R<T> {
    Err(mlua::Error::RuntimeError(msg.to_string()))
}

/// Matches one pattern against one subject.
pub struct Matcher<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    capture: [Capture; MAX_CAPTURES],
    depth: usize,
    ticker: &'a mut Ticker,
}

/// Whether `pat` uses any special character (else a plain search does).
pub fn has_specials(pat: &[u8]) -> bool {
    pat.iter().any(|c| b"^$*+?.([%-".contains(c))
}

impl<'a> Matcher<'a> {
    pub fn new(src: &'a [u8], pat: &'a [u8], ticker: &'a mut Ticker) -> Self {
        Self {
            src,
            pat,
            level: 0,
            capture: [Capture {
                init: 0,
                len: CapLen::Unfinished,
            }; MAX_CAPTURES],
            depth: 0,
            ticker,
        }
    }

    /// Tries to match the pattern from byte `p` on at subject offset `s`;
    /// the end of the match if it does.
    pub fn match_at(&mut self, s: usize, p: usize) -> R<Option<usize>> {
        self.level = 0;
        self.depth = 0;
        self.do_match(s, p)
    }

    /// The captures of the last match `s..e` (the whole match when the
    /// pattern has none and `whole` is set), as Lua's `push_captures`.
    pub fn captures(&self, s: usize, e: usize, whole: bool) -> R<Vec<Captured>> {
        let n = if self.level == 0 && whole {
            1
        } else {
            self.level
        };
        (0..n).map(|i| self.capture_value(i, s, e)).collect()
    }

    /// Capture `i` of the last match `s..e` (`push_onecapture`).
    pub fn capture_value(&self, i: usize, s: usize, e: usize) -> R<Captured> {
        if i >= self.level {
            return if i == 0 {
                Ok(Captured::Span(s, e))
            } else {
                fail("invalid capture index")
            };
        }
        let c = self.capture[i];
        match c.len {
            CapLen::Unfinished => fail("unfinished capture"),
            CapLen::Position => Ok(Captured::Position(c.init + 1)),
            CapLen::Len(l) => Ok(Captured::Span(c.init, c.init + l)),
        }
    }

    fn pc(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    fn class_end(&self, mut p: usize) -> R<usize> {
        let c = self.pc(p);
        p += 1;
        match c {
            b'%' => {
                if p >= self.pat.len() {
                    return fail("malformed pattern (ends with '%')");
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.pc(p) == b'^' {
                    p += 1;
                }
                loop {
                    if p >= self.pat.len() {
                        return fail("malformed pattern (missing ']')");
                    }
                    let cc = self.pat[p];
                    p += 1;
                    if cc == b'%' && p < self.pat.len() {
                        p += 1;
                    }
                    if p < self.pat.len() && self.pat[p] == b']' {
                        return Ok(p + 1);
                    }
                }
            }
            _ => Ok(p),
        }
    }

    fn single_match(&self, c: u8, p: usize, ep: usize) -> bool {
        match self.pat[p] {
            b'.' => true,
            b'%' => match_class(c, self.pc(p + 1)),
            b'[' => self.match_bracket(c, p, ep - 1),
            x => x == c,
        }
    }

    /// `p` is at `[`, `ec` at the closing `]`.
    fn match_bracket(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.pc(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                return !sig;
            }
            if self.pat[p] == b'%' {
                p += 1;
                if match_class(c, self.pc(p)) {
                    return sig;
                }
            } else if self.pc(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.pat[p - 2] <= c && c <= self.pat[p] {
                    return sig;
                }
            } else if self.pat[p] == c {
                return sig;
            }
        }
    }

    fn do_match(&mut self, s: usize, p: usize) -> R<Option<usize>> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return fail("pattern too complex");
        }
        let r = self.match_here(s, p);
        self.depth -= 1;
        r
    }

    fn match_here(&mut self, mut s: usize, mut p: usize) -> R<Option<usize>> {
        let plen = self.pat.len();
        let slen = self.src.len();
        loop {
            self.ticker.tick()?;
            if p >= plen {
                return Ok(Some(s));
            }
            match self.pat[p] {
                b'(' => {
                    return if self.pc(p + 1) == b')' {
                        self.start_capture(s, p + 2, CapLen::Position)
                    } else {
                        self.start_capture(s, p + 1, CapLen::Unfinished)
                    };
                }
                b')' => return self.end_capture(s, p + 1),
                b'$' if p + 1 == plen => return Ok((s == slen).then_some(s)),
                b'%' if self.pc(p + 1) == b'b' => match self.match_balance(s, p + 2)? {
                    None => return Ok(None),
                    Some(ns) => {
                        s = ns;
                        p += 4;
                    }
                },
                b'%' if self.pc(p + 1) == b'f' => {
                    p += 2;
                    if self.pc(p) != b'[' {
                        return fail("missing '[' after '%f' in pattern");
                    }
                    let ep = self.class_end(p)?;
                    let prev = if s == 0 { 0 } else { self.src[s - 1] };
                    let cur = self.src.get(s).copied().unwrap_or(0);
                    if self.match_bracket(prev, p, ep - 1) || !self.match_bracket(cur, p, ep - 1) {
                        return Ok(None);
                    }
                    p = ep;
                }
                b'%' if self.pc(p + 1).is_ascii_digit() => {
                    match self.match_capture(s, self.pc(p + 1))? {
                        None => return Ok(None),
                        Some(ns) => {
                            s = ns;
                            p += 2;
                        }
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let m = s < slen && self.single_match(self.src[s], p, ep);
                    match self.pat.get(ep).copied() {
                        Some(b'?') => {
                            if m && let Some(r) = self.do_match(s + 1, ep + 1)? {
                                return Ok(Some(r));
                            }
                            p = ep + 1;
                        }
                        Some(b'*') => return self.max_expand(s, p, ep),
                        Some(b'+') => {
                            return if m {
                                self.max_expand(s + 1, p, ep)
                            } else {
                                Ok(None)
                            };
                        }
                        Some(b'-') => return self.min_expand(s, p, ep),
                        _ => {
                            if !m {
                                return Ok(None);
                            }
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        }
    }

    fn match_balance(&mut self, s: usize, p: usize) -> R<Option<usize>> {
        if p + 1 >= self.pat.len() {
            return fail("malformed pattern (missing arguments to '%b')");
        }
        let (b, e) = (self.pat[p], self.pat[p + 1]);
        if s >= self.src.len() || self.src[s] != b {
            return Ok(None);
        }
        let mut cont = 1usize;
        for i in s + 1..self.src.len() {
            self.ticker.tick()?;
            let c = self.src[i];
            if c == e {
                cont -= 1;
                if cont == 0 {
                    return Ok(Some(i + 1));
                }
            } else if c == b {
                cont += 1;
            }
        }
        Ok(None)
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> R<Option<usize>> {
        let mut i = 0;
        while s + i < self.src.len() && self.single_match(self.src[s + i], p, ep) {
            self.ticker.tick()?;
            i += 1;
        }
        loop {
            if let Some(r) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(r));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> R<Option<usize>> {
        loop {
            if let Some(r) = self.do_match(s, ep + 1)? {
                return Ok(Some(r));
            }
            if s < self.src.len() && self.single_match(self.src[s], p, ep) {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: CapLen) -> R<Option<usize>> {
        if self.level >= MAX_CAPTURES {
            return fail("too many captures");
        }
        self.capture[self.level] = Capture { init: s, len: what };
        self.level += 1;
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.level -= 1;
        }
        Ok(r)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> R<Option<usize>> {
        let Some(l) = (0..self.level)
            .rev()
            .find(|&l| self.capture[l].len == CapLen::Unfinished)
        else {
            return fail("invalid pattern capture");
        };
        self.capture[l].len = CapLen::Len(s - self.capture[l].init);
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.capture[l].len = CapLen::Unfinished;
        }
        Ok(r)
    }

    fn match_capture(&mut self, s: usize, digit: u8) -> R<Option<usize>> {
        let l = digit.wrapping_sub(b'1') as usize;
        if l >= self.level || self.capture[l].len == CapLen::Unfinished {
            return fail("invalid capture index");
        }
        let CapLen::Len(len) = self.capture[l].len else {
            return Ok(None);
        };
        let init = self.capture[l].init;
        let same = self.src.len() - s >= len && self.src[init..init + len] == self.src[s..s + len];
        Ok(same.then_some(s + len))
    }
}

fn match_class(c: u8, cl: u8) -> bool {
    let res = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => c == b' ' || (b'\t'..=b'\r').contains(&c),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        b'z' => c == 0,
        _ => return cl == c,
    };
    if cl.is_ascii_lowercase() { res } else { !res }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first match of `pat` in `src` (find semantics): span and captures.
    fn find(src: &str, pat: &str) -> Option<(usize, usize, Vec<Captured>)> {
        let mut t = Ticker::new("test");
        let (anchor, p0) = if pat.starts_with('^') {
            (true, 1)
        } else {
            (false, 0)
        };
        let mut m = Matcher::new(src.as_bytes(), pat.as_bytes(), &mut t);
        for s in 0..=src.len() {
            if let Some(e) = m.match_at(s, p0).unwrap() {
                return Some((s, e, m.captures(s, e, false).unwrap()));
            }
            if anchor {
                break;
            }
        }
        None
    }

    fn span(src: &str, pat: &str) -> Option<String> {
        find(src, pat).map(|(s, e, _)| src[s..e].to_string())
    }

    #[test]
    fn classes_sets_and_quantifiers() {
        assert_eq!(span("hello world", "%a+").as_deref(), Some("hello"));
        assert_eq!(span("  x = 12 ", "%d+").as_deref(), Some("12"));
        assert_eq!(span("a-b", "[%-]").as_deref(), Some("-"));
        assert_eq!(span("abc]", "[]]").as_deref(), Some("]"));
        assert_eq!(span("xyz9", "[^%a]").as_deref(), Some("9"));
        assert_eq!(span("caaat", "ca-t").as_deref(), Some("caaat"));
        assert_eq!(span("color colour", "colou?r").as_deref(), Some("color"));
        assert_eq!(span("<a><b>", "<.->").as_deref(), Some("<a>"));
        assert_eq!(span("<a><b>", "<.*>").as_deref(), Some("<a><b>"));
        assert_eq!(span("abc", "^b"), None);
        assert_eq!(span("abc", "c$").as_deref(), Some("c"));
        assert_eq!(span("a$b", "$b").as_deref(), Some("$b"));
        assert_eq!(span("f(a(b)c)d", "%b()").as_deref(), Some("(a(b)c)"));
        assert_eq!(span("THE (quick) fox", "%f[%a]%a+").as_deref(), Some("THE"));
        assert_eq!(span("x\0y", "%z").as_deref(), Some("\0"));
    }

    #[test]
    fn captures_and_back_references() {
        let (_, _, caps) = find("key = value", "(%w+)%s*=%s*(%w+)").unwrap();
        assert_eq!(caps, vec![Captured::Span(0, 3), Captured::Span(6, 11)]);
        let (_, _, caps) = find("hello", "()ll()").unwrap();
        assert_eq!(caps, vec![Captured::Position(3), Captured::Position(5)]);
        assert_eq!(
            span("say \"hi\" or 'yo'", "([\"'])(.-)%1").as_deref(),
            Some("\"hi\"")
        );
    }

    #[test]
    fn malformed_patterns_are_errors() {
        let mut t = Ticker::new("test");
        for bad in ["%", "[a", "a)", "%1", "%fa"] {
            let mut m = Matcher::new(b"aaa", bad.as_bytes(), &mut t);
            let r = (0..=3).try_for_each(|s| m.match_at(s, 0).map(drop));
            assert!(r.is_err(), "{bad:?} should be an error");
        }
    }
}
