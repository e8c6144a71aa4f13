//! Running a Lua script in Redis as one `EVALSHA` written straight into the
//! command's buffer. `redis::ScriptInvocation` first copies every key and
//! argument into a vector of its own, which cost a cross-node publish (six
//! keys) about 4,000 of node A's 82,000 instructions
//! (`CLUSTER=1 bench/delivery_cost.sh`).

use redis::aio::ConnectionManager;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisResult, Script, ServerErrorKind, ToRedisArgs};

/// One call of a script: its keys (exactly as many as announced), then its
/// arguments.
pub struct Eval<'a> {
    script: &'a Script,
    cmd: Cmd,
    /// Keys still to come.
    keys_left: usize,
}

impl<'a> Eval<'a> {
    /// A call of `script` with `keys` keys and `args` arguments, of about
    /// `bytes` bytes in all (the command is sized for them once).
    pub fn new(script: &'a Script, keys: usize, args: usize, bytes: usize) -> Self {
        let mut cmd = Cmd::with_capacity(3 + keys + args, 64 + bytes);
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys);
        Self {
            script,
            cmd,
            keys_left: keys,
        }
    }

    pub fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        debug_assert!(self.keys_left > 0, "more keys than announced");
        self.keys_left = self.keys_left.saturating_sub(1);
        self.cmd.arg(key);
        self
    }

    pub fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        debug_assert_eq!(self.keys_left, 0, "an argument before the last key");
        self.cmd.arg(arg);
        self
    }

    /// Runs it; when Redis does not know the script yet (a restart, a
    /// `SCRIPT FLUSH`), loads it and runs it again.
    pub async fn invoke<T: FromRedisValue>(&self, con: &mut ConnectionManager) -> RedisResult<T> {
        match self.cmd.query_async(con).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.script.load_async(con).await?;
                self.cmd.query_async(con).await
            }
            r => r,
        }
    }
}
