//! `string.find`, `string.match`, `string.gmatch` and `string.gsub` that the
//! CPU budget can stop. A call whose worst case is small ([`C_STEPS`]) runs
//! LuaJIT's own C function, as fast as before; any other runs on the
//! budgeted matcher of [`super::pattern`] (LuaJIT's C matcher cannot be
//! interrupted: `(.-)(.-)(.-)b` on 20,000 bytes takes hours). Arguments and results are those
//! of LuaJIT (Lua 5.1): `init` is clamped to the subject, `gsub` accepts a
//! string, table or function replacement and an optional count, `gmatch`
//! does not treat `^` as an anchor.
//!
//! `gsub` builds its result outside the Lua heap, so it checks the result
//! against `engine.luavm.memoryLimit` itself; a replacement function is one
//! more level of native nesting (counted with coroutines).

use super::budget::{self, Ticker};
use super::pattern::{Captured, Matcher, has_specials};
use mlua::{Function, Lua, LuaString, MultiValue, Table, Value};

/// Worst-case steps below which a call runs LuaJIT's own C function: the
/// bound is `(#s + 1) ^ (q + 1) * (#p + 1)` with `q` the pattern's
/// quantifiers, back references and `%b` (each can multiply the work by
/// `#s`). Ten million simple steps take milliseconds, far below any budget.
pub const C_STEPS: f64 = 1e7;

/// Installs the four functions into the VM's `string` table (which is also
/// what string methods such as `s:find(p)` look up).
pub fn install(lua: &Lua, memory_limit: usize) -> mlua::Result<()> {
    install_with(lua, memory_limit, C_STEPS)
}

/// [`install`] with another bound for the C functions (0: never use them).
fn install_with(lua: &Lua, memory_limit: usize, c_steps: f64) -> mlua::Result<()> {
    let string: Table = lua.globals().get("string")?;
    let find = lua.create_function(
        |lua, (s, p, init, plain): (LuaString, LuaString, Option<f64>, Value)| {
            let plain = !matches!(plain, Value::Nil | Value::Boolean(false));
            let init = init.map(|f| f as i64); // as LuaJIT: truncated
            find_or_match(lua, &s.as_bytes(), &p.as_bytes(), init, plain, true)
        },
    )?;
    let match_ =
        lua.create_function(|lua, (s, p, init): (LuaString, LuaString, Option<i64>)| {
            find_or_match(lua, &s.as_bytes(), &p.as_bytes(), init, false, false)
        })?;
    let gsub = lua.create_function(
        move |lua, (s, p, repl, max_n): (LuaString, LuaString, Value, Option<f64>)| {
            let max_n = max_n.map(|f| f as i64);
            gsub(lua, &s.as_bytes(), &p.as_bytes(), repl, max_n, memory_limit)
        },
    )?;
    let step = lua.create_function(|lua, (s, p, pos): (LuaString, LuaString, usize)| {
        gmatch_step(lua, &s.as_bytes(), &p.as_bytes(), pos)
    })?;
    let c: (Function, Function, Function, Function) = (
        string.get("find")?,
        string.get("match")?,
        string.get("gmatch")?,
        string.get("gsub")?,
    );
    let (find, match_, gmatch, gsub): (Function, Function, Function, Function) = lua
        .load(DISPATCH_LUA)
        .set_name("=string")
        .call((c.0, c.1, c.2, c.3, find, match_, gsub, step, c_steps))?;
    string.set("find", find)?;
    string.set("match", match_)?;
    string.set("gmatch", gmatch)?;
    string.set("gsub", gsub)
}

/// Chooses between LuaJIT's C functions (fast, but nothing can interrupt
/// them) and the Rust ones (budgeted) by the call's worst case. The
/// `gmatch` iterator of the Rust path keeps its subject, pattern and
/// position as Lua values (no Rust handles that would pin slots of mlua's
/// reference stack). `gsub` with a function or table always runs in Rust:
/// its callbacks nest on the native stack.
const DISPATCH_LUA: &str = r#"
local c_find, c_match, c_gmatch, c_gsub, r_find, r_match, r_gsub, r_step, c_steps = ...
local type, error = type, error

-- pattern -> quantifier count, or -1 without special characters
local cost, cached = {}, 0
local function quantifiers(p)
    local q = cost[p]
    if q then
        return q
    end
    if not c_find(p, "[%^%$%*%+%?%.%(%[%%%-]") then
        q = -1
    else
        local _, a = c_gsub(p, "[%*%+%-%?]", "")
        local _, b = c_gsub(p, "%%[b1-9]", "")
        q = a + b
    end
    if #p <= 256 then
        if cached >= 256 then
            cost, cached = {}, 0
        end
        cost[p], cached = q, cached + 1
    end
    return q
end

local function cheap(s, p, plain)
    if type(s) ~= "string" or type(p) ~= "string" then
        return false
    end
    local q = plain and -1 or quantifiers(p)
    if q < 0 then
        return (#s + 1) * (#p + 1) <= c_steps
    end
    return (#s + 1) ^ (q + 1) * (#p + 1) <= c_steps
end

local function find(s, p, init, plain)
    if cheap(s, p, plain) then
        return c_find(s, p, init, plain)
    end
    return r_find(s, p, init, plain)
end

local function match(s, p, init)
    if cheap(s, p) then
        return c_match(s, p, init)
    end
    return r_match(s, p, init)
end

local function gsub(s, p, repl, n)
    local t = type(repl)
    if (t == "string" or t == "number") and cheap(s, p) then
        return c_gsub(s, p, repl, n)
    end
    return r_gsub(s, p, repl, n)
end

local function gmatch(s, p)
    if cheap(s, p) then
        return c_gmatch(s, p)
    end
    local ts, tp = type(s), type(p)
    if ts ~= "string" and ts ~= "number" then
        error("bad argument #1 to 'gmatch' (string expected, got " .. ts .. ")", 2)
    end
    if tp ~= "string" and tp ~= "number" then
        error("bad argument #2 to 'gmatch' (string expected, got " .. tp .. ")", 2)
    end
    local pos = 0
    local function take(np, ...)
        if np == nil then
            return nil
        end
        pos = np
        return ...
    end
    return function()
        return take(r_step(s, p, pos))
    end
end

return find, match, gmatch, gsub
"#;

fn value_of(lua: &Lua, src: &[u8], c: Captured) -> mlua::Result<Value> {
    Ok(match c {
        Captured::Span(a, b) => Value::String(lua.create_string(&src[a..b])?),
        Captured::Position(n) => Value::Integer(n as _),
    })
}

fn push_captures(
    lua: &Lua,
    src: &[u8],
    caps: Vec<Captured>,
    out: &mut MultiValue,
) -> mlua::Result<()> {
    for c in caps {
        out.push_back(value_of(lua, src, c)?);
    }
    Ok(())
}

/// Lua 5.1's start offset: 1-based, negative from the end, clamped.
fn start_offset(init: Option<i64>, len: usize) -> usize {
    let len_i = len as i64;
    let mut st = init.unwrap_or(1);
    if st < 0 {
        st = st.saturating_add(len_i);
    } else {
        st -= 1;
    }
    (st.max(0) as u64).min(len as u64) as usize
}

fn find_or_match(
    lua: &Lua,
    s: &[u8],
    p: &[u8],
    init: Option<i64>,
    plain: bool,
    find: bool,
) -> mlua::Result<MultiValue> {
    let st = start_offset(init, s.len());
    let mut out = MultiValue::new();
    let mut ticker = Ticker::new(if find { "string.find" } else { "string.match" });
    if find && (plain || !has_specials(p)) {
        if let Some(i) = plain_find(s, p, st, &mut ticker)? {
            out.push_back(Value::Integer((i + 1) as _));
            out.push_back(Value::Integer((i + p.len()) as _));
        } else {
            out.push_back(Value::Nil);
        }
        return Ok(out);
    }
    let (anchor, p0) = if p.first() == Some(&b'^') {
        (true, 1)
    } else {
        (false, 0)
    };
    let mut m = Matcher::new(s, p, &mut ticker);
    let mut at = st;
    loop {
        if let Some(e) = m.match_at(at, p0)? {
            if find {
                out.push_back(Value::Integer((at + 1) as _));
                out.push_back(Value::Integer(e as _));
            }
            push_captures(lua, s, m.captures(at, e, !find)?, &mut out)?;
            return Ok(out);
        }
        at += 1;
        if anchor || at > s.len() {
            break;
        }
    }
    out.push_back(Value::Nil);
    Ok(out)
}

/// Substring search; linear for UTF-8 text, budgeted otherwise.
fn plain_find(
    hay: &[u8],
    needle: &[u8],
    from: usize,
    t: &mut Ticker,
) -> mlua::Result<Option<usize>> {
    if needle.is_empty() {
        return Ok(Some(from));
    }
    if let (Ok(h), Ok(n)) = (
        std::str::from_utf8(&hay[from..]),
        std::str::from_utf8(needle),
    ) {
        return Ok(h.find(n).map(|i| i + from));
    }
    let mut i = from;
    while i + needle.len() <= hay.len() {
        t.tick()?;
        if hay[i] == needle[0] && &hay[i..i + needle.len()] == needle {
            return Ok(Some(i));
        }
        i += 1;
    }
    Ok(None)
}

fn gmatch_step(lua: &Lua, s: &[u8], p: &[u8], pos: usize) -> mlua::Result<MultiValue> {
    let mut ticker = Ticker::new("string.gmatch");
    let mut m = Matcher::new(s, p, &mut ticker);
    let mut out = MultiValue::new();
    for at in pos..=s.len() {
        if let Some(e) = m.match_at(at, 0)? {
            let next = if e == at { e + 1 } else { e };
            out.push_back(Value::Integer(next as _));
            push_captures(lua, s, m.captures(at, e, true)?, &mut out)?;
            return Ok(out);
        }
    }
    out.push_back(Value::Nil);
    Ok(out)
}

enum Repl {
    Text(Vec<u8>),
    Call(Function),
    Lookup(Table),
}

fn gsub(
    lua: &Lua,
    src: &[u8],
    p: &[u8],
    repl: Value,
    max_n: Option<i64>,
    memory_limit: usize,
) -> mlua::Result<(LuaString, i64)> {
    let repl = match repl {
        Value::String(s) => Repl::Text(s.as_bytes().to_vec()),
        v @ (Value::Integer(_) | Value::Number(_)) => match lua.coerce_string(v)? {
            Some(s) => Repl::Text(s.as_bytes().to_vec()),
            None => Repl::Text(Vec::new()),
        },
        Value::Function(f) => Repl::Call(f),
        Value::Table(t) => Repl::Lookup(t),
        other => {
            return Err(mlua::Error::RuntimeError(format!(
                "bad argument #3 to 'gsub' (string/function/table expected, got {})",
                other.type_name()
            )));
        }
    };
    let max_n = max_n.unwrap_or(src.len() as i64 + 1);
    let (anchor, p0) = if p.first() == Some(&b'^') {
        (true, 1)
    } else {
        (false, 0)
    };
    let mut ticker = Ticker::new("string.gsub");
    let mut m = Matcher::new(src, p, &mut ticker);
    let mut out: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut n = 0i64;
    while n < max_n {
        let e = m.match_at(at, p0)?;
        if let Some(e) = e {
            n += 1;
            add_value(lua, &m, src, at, e, &repl, &mut out)?;
            if memory_limit > 0 && out.len() > memory_limit {
                return Err(mlua::Error::MemoryError(format!(
                    "string.gsub: result larger than engine.luavm.memoryLimit ({memory_limit} bytes)"
                )));
            }
        }
        match e {
            Some(e) if e > at => at = e,
            _ if at < src.len() => {
                out.push(src[at]);
                at += 1;
            }
            _ => break,
        }
        if anchor {
            break;
        }
    }
    out.extend_from_slice(&src[at..]);
    Ok((lua.create_string(&out)?, n))
}

fn add_value(
    lua: &Lua,
    m: &Matcher,
    src: &[u8],
    s: usize,
    e: usize,
    repl: &Repl,
    out: &mut Vec<u8>,
) -> mlua::Result<()> {
    let value = match repl {
        Repl::Text(r) => {
            let mut i = 0;
            while i < r.len() {
                if r[i] != b'%' {
                    out.push(r[i]);
                } else {
                    i += 1;
                    let c = r.get(i).copied().unwrap_or(0);
                    if !c.is_ascii_digit() {
                        out.push(c);
                    } else if c == b'0' {
                        out.extend_from_slice(&src[s..e]);
                    } else {
                        match m.capture_value((c - b'1') as usize, s, e)? {
                            Captured::Span(a, b) => out.extend_from_slice(&src[a..b]),
                            Captured::Position(p) => {
                                out.extend_from_slice(p.to_string().as_bytes())
                            }
                        }
                    }
                }
                i += 1;
            }
            return Ok(());
        }
        Repl::Call(f) => {
            let mut args = MultiValue::new();
            push_captures(lua, src, m.captures(s, e, true)?, &mut args)?;
            budget::enter_coroutine()?;
            let r = f.call::<Value>(args);
            budget::leave_coroutine();
            r?
        }
        Repl::Lookup(t) => t.get::<Value>(value_of(lua, src, m.capture_value(0, s, e)?)?)?,
    };
    match value {
        Value::Nil | Value::Boolean(false) => out.extend_from_slice(&src[s..e]),
        Value::String(v) => out.extend_from_slice(&v.as_bytes()),
        v @ (Value::Integer(_) | Value::Number(_)) => {
            if let Some(v) = lua.coerce_string(v)? {
                out.extend_from_slice(&v.as_bytes());
            }
        }
        other => {
            return Err(mlua::Error::RuntimeError(format!(
                "invalid replacement value (a {})",
                other.type_name()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rust functions give what LuaJIT's own gave, for the same calls.
    #[test]
    fn same_results_as_luajit() {
        let lua = Lua::new();
        lua.load(
            "c_find, c_match, c_gmatch, c_gsub = string.find, string.match, string.gmatch, string.gsub",
        )
        .exec()
        .unwrap();
        // Always the Rust functions.
        install_with(&lua, 0, 0.0).unwrap();
        let mismatches: String = lua
            .load(
                r##"
local function pack(...) return { n = select("#", ...), ... } end
local function show(t)
    local out = {}
    for i = 1, t.n do out[#out + 1] = type(t[i]) .. ":" .. tostring(t[i]) end
    return table.concat(out, ",")
end
local cases = {
    { "hello world", "o" }, { "hello world", "o", 6 }, { "hello world", "o", -3 },
    { "hello world", "l+" }, { "hello world", "(h)(e)" }, { "hello", "()ll()" },
    { "hello", "", 10 }, { "hello", "", -10 }, { "a.b", ".", 1, true }, { "a.b", "%." },
    { "  trim me  ", "^%s*(.-)%s*$" }, { "key=val; k2=v2", "(%w+)=(%w+)" },
    { "f(a(b)c)d", "%b()" }, { "THE (quick) fox", "%f[%a]%a+" }, { "abc", "^b" },
    { "abc", "c$" }, { "x$y", "$y" }, { "[tag]", "%[(.-)%]" }, { "a-b-c", "[^-]+" },
    { "2024-01-05", "(%d+)-(%d+)-(%d+)" }, { "aaa", "a-b" }, { "aaa", "a*" },
    { "abab", "(ab)%1" }, { "\0x\0", "%z" }, { "MiXeD", "%u%l" }, { "tab\there", "%c" },
    { "0x1F", "%x+" }, { "hello", "l", 3.7 }, { "", "" }, { "", "a*" }, { "abc", "[a-b]+" }, { "a]b", "[]]" },
}
local bad = {}
for _, c in ipairs(cases) do
    for _, f in ipairs({ "find", "match" }) do
        local want = show(pack(_G["c_" .. f](c[1], c[2], c[3], c[4])))
        local got = show(pack(string[f](c[1], c[2], c[3], c[4])))
        if want ~= got then bad[#bad + 1] = f .. "(" .. c[2] .. "): " .. want .. " vs " .. got end
    end
    local want, got = {}, {}
    for a, b in c_gmatch(c[1], c[2]) do want[#want + 1] = tostring(a) .. "/" .. tostring(b) end
    for a, b in string.gmatch(c[1], c[2]) do got[#got + 1] = tostring(a) .. "/" .. tostring(b) end
    if table.concat(want, ",") ~= table.concat(got, ",") then
        bad[#bad + 1] = "gmatch(" .. c[2] .. "): " .. table.concat(want, ",") .. " vs " .. table.concat(got, ",")
    end
    for _, r in ipairs({ "<%0>", "%1%%", "x", 7, { hello = "HI", a = false }, function(x) return x and #x end }) do
        local ok1, w1, w2 = pcall(c_gsub, c[1], c[2], r)
        local ok2, g1, g2 = pcall(string.gsub, c[1], c[2], r)
        if ok1 ~= ok2 or (ok1 and (w1 ~= g1 or w2 ~= g2)) then
            bad[#bad + 1] = "gsub(" .. c[2] .. ", " .. tostring(r) .. "): " .. tostring(w1) .. " vs " .. tostring(g1)
        end
    end
    local w1, w2 = c_gsub(c[1], c[2], "#", 1)
    local g1, g2 = string.gsub(c[1], c[2], "#", 1)
    if w1 ~= g1 or w2 ~= g2 then bad[#bad + 1] = "gsub n=1 (" .. c[2] .. ")" end
end
for _, p in ipairs({ "%", "[a", "(a", "a)", "%1", "%fa", "%b" }) do
    local ok1 = pcall(c_find, "aaa", p)
    local ok2 = pcall(string.find, "aaa", p)
    if ok1 ~= ok2 then bad[#bad + 1] = "error for " .. p .. ": " .. tostring(ok1) .. " vs " .. tostring(ok2) end
end
return table.concat(bad, "\n")
"##,
            )
            .eval()
            .unwrap();
        assert_eq!(mismatches, "", "\n{mismatches}");
    }

    #[test]
    fn a_costly_call_runs_in_rust_under_the_budget() {
        let lua = Lua::new();
        install(&lua, 0).unwrap();
        budget::set_budget(std::time::Duration::from_millis(50));
        for (f, code) in [
            (
                "string.find",
                "string.find(string.rep('a', 20000), '(.-)(.-)(.-)b')",
            ),
            (
                "string.match",
                "string.rep('a', 20000):match('(.-)(.-)(.-)b')",
            ),
            (
                "string.gsub",
                "string.gsub(string.rep('a', 20000), '(.-)(.-)(.-)b', 'x')",
            ),
        ] {
            let _poll = budget::Poll::start();
            let err = lua.load(code).exec().unwrap_err().to_string();
            assert!(err.contains(&format!("{f}: hook aborted")), "{code}: {err}");
        }
        // Cheap calls keep LuaJIT's results.
        let r: (i64, i64, String) = lua
            .load("return string.find('key=value', '(%w+)=')")
            .eval()
            .unwrap();
        assert_eq!(r, (1, 4, "key".to_string()));
    }
}
