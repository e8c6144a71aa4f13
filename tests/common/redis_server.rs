//! A private redis-server for the Redis and cluster tests, and cluster
//! nodes started on it.

use super::*;

/// A private redis-server on a free loopback port, stopped on drop; it can
/// be stopped and started again on the same port (Redis restart tests).
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let mut r = RedisServer {
            port: free_port(),
            child: None,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server (SIGKILL) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A paused server must be let go on to die.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is
    /// answered until [`RedisServer::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs a Redis command and returns its reply.
    pub async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let client = redis::Client::open(format!("redis://{}/", self.addr())).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Gateway {
    /// Starts a cluster node (`connmix engine`) on `redis` with key `prefix`.
    pub async fn start_node(
        servers: Vec<ServerSpec>,
        redis: &RedisServer,
        prefix: &str,
    ) -> Gateway {
        Self::start_node_with(servers, redis, prefix, 2000, Vec::new()).await
    }

    /// [`Gateway::start_node`] with `publishTimeoutMs` and `callTimeoutMs`
    /// set to `timeout_ms`, and extra environment variables.
    pub async fn start_node_with(
        servers: Vec<ServerSpec>,
        redis: &RedisServer,
        prefix: &str,
        timeout_ms: u64,
        env: Vec<(String, String)>,
    ) -> Gateway {
        let cluster = format!(
            "  cluster:\n    addr: {}\n    prefix: {prefix}\n    heartbeat: 1\n    nodeExpiry: 3\n    publishTimeoutMs: {timeout_ms}\n    callTimeoutMs: {timeout_ms}\n",
            redis.addr()
        );
        Self::start_full_env(servers, &cluster, "", "engine", env).await
    }

    /// [`Gateway::start_node`] with `extra` lines under `engine:` (history).
    pub async fn start_node_extra(
        servers: Vec<ServerSpec>,
        redis: &RedisServer,
        prefix: &str,
        extra: &str,
    ) -> Gateway {
        let cluster = format!(
            "  cluster:\n    addr: {}\n    prefix: {prefix}\n    heartbeat: 1\n    nodeExpiry: 3\n    publishTimeoutMs: 2000\n    callTimeoutMs: 2000\n{extra}",
            redis.addr()
        );
        Self::start_full_env(servers, &cluster, "", "engine", Vec::new()).await
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The live nodes this node lists at `/v1/mesh/nodes`.
    pub async fn nodes(&self) -> Vec<Value> {
        let text = reqwest::get(self.api("/v1/mesh/nodes"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["r"]["nodes"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until this node lists exactly `n` live nodes.
    pub async fn wait_nodes(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let nodes = self.nodes().await;
            if nodes.len() == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} nodes, have {nodes:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
