//! Fleet enforcement: one GCRA per key in Redis, shared by every instance.
//!
//! Every request makes at most one Redis call (`EVALSHA` of a Lua script that
//! runs the GCRA step for all fleet rules of the route atomically, falling
//! back to `EVAL` when Redis lost the script), bounded by the store timeout.
//! The time source is Redis's own clock (`TIME`), so instances need no clock
//! agreement. Keys expire when their bucket has refilled.
//!
//! The connection is a multiplexed one, owned by a small background thread
//! (`ratelimit-redis`, its own Tokio runtime) that connects, reconnects with
//! backoff and preloads the script, never on the request path. While it is
//! down, calls fail at once (no waiting) and `on_store_error` decides. A
//! request takes the connection from an `ArcSwapOption`: no lock.
//!
//! With `cluster: true` the connection is a Redis Cluster one, which sends
//! each key to the master of its slot and follows failovers itself. Each
//! bucket is one key, and in a cluster each call carries one bucket (a
//! route's fleet rules are checked one after another, each atomically), so
//! no call spans two slots; a route's buckets are not forced onto one slot,
//! which would put a busy route's whole load on one master.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::Notify;
use tokio::time::timeout;

use super::store_config::StoreConfig;

/// GCRA for every key of one request. KEYS[i]: a bucket; ARGV[2i-1]: the
/// emission interval in microseconds; ARGV[2i]: the burst. Returns, per key,
/// allowed (1|0), remaining, and microseconds until the next request is
/// available (the wait when limited). The stored value is the theoretical
/// arrival time (TAT) in microseconds of Redis time.
const GCRA_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key))
  if tat == nil or tat < now then tat = now end
  local ahead = tat + interval - now
  local limit = interval * burst
  if ahead <= limit then
    redis.call('SET', key, string.format('%d', tat + interval),
      'PX', string.format('%d', math.ceil(ahead / 1000)))
    out[#out + 1] = 1
    out[#out + 1] = math.floor((limit - ahead) / interval)
    out[#out + 1] = (ahead - 1) % interval + 1
  else
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = ahead - limit
  end
end
return out
"#;

/// Consecutive timeouts after which the connection is replaced.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No `rate_limit_store` is configured but a fleet rule ran.
    #[error("no rate_limit_store configured")]
    NotConfigured,
    /// The connection is down (reconnecting in the background).
    #[error("not connected to Redis")]
    NotConnected,
    /// No answer within the store timeout.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection broke.
    #[error("Redis error: {0}")]
    Redis(String),
    /// The script's answer had an unexpected shape.
    #[error("unexpected answer from the rate-limit script")]
    BadReply,
}

/// One bucket to check in a store call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FleetCall {
    pub(crate) key: String,
    pub(crate) interval_us: u64,
    pub(crate) burst: u32,
}

/// The answer for one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FleetReply {
    pub(crate) allowed: bool,
    pub(crate) remaining: u32,
    pub(crate) reset: Duration,
}

/// A connection to the store.
#[derive(Clone)]
enum Conn {
    /// One Redis.
    Single(MultiplexedConnection),
    /// A Redis Cluster (routes by slot, follows the topology).
    Cluster(ClusterConnection),
}

/// What connections are made with.
enum Client {
    Single(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// The current connection and its generation.
struct Slot {
    generation: u64,
    conn: Conn,
}

struct Shared {
    config: StoreConfig,
    client: Client,
    script: redis::Script,
    slot: ArcSwapOption<Slot>,
    generations: AtomicU64,
    wake: Notify,
    errors: AtomicU64,
    timeouts_in_a_row: AtomicU32,
}

impl Shared {
    /// Drops the connection of `generation` (if still current) and asks the
    /// background thread for a new one.
    fn reconnect(&self, generation: u64) {
        let current = self.slot.load();
        if current.as_ref().is_some_and(|s| s.generation == generation) {
            // Lost only to a newer connection, which is then kept.
            let _ = self.slot.compare_and_swap(&*current, None);
        }
        self.wake.notify_one();
    }
}

/// The clients of `config`; `ca` is the PEM CA bundle for `rediss://`.
fn client(config: &StoreConfig, ca: Option<&[u8]>) -> Result<Client, String> {
    let certs = || redis::TlsCertificates {
        client_tls: None,
        root_cert: ca.map(<[u8]>::to_vec),
    };
    if config.cluster {
        let mut b = redis::cluster::ClusterClientBuilder::new(config.nodes().collect::<Vec<_>>())
            .connection_timeout(config.connect_timeout())
            .response_timeout(config.timeout())
            // The request's own timeout bounds the call; retries inside it
            // ride out a failover's MOVED and TRYAGAIN answers.
            .retries(2);
        if ca.is_some() {
            b = b.certs(certs());
        }
        return b
            .build()
            .map(|c| Client::Cluster(Box::new(c)))
            .map_err(|e| format!("rate_limit_store: {e}"));
    }
    let single = match ca {
        Some(_) => redis::Client::build_with_tls(config.redis.as_str(), certs()),
        None => redis::Client::open(config.redis.as_str()),
    };
    single
        .map(|c| Client::Single(Box::new(c)))
        .map_err(|e| format!("rate_limit_store.redis: invalid URL: {e}"))
}

/// Stops the background thread when the last handle goes.
struct StopOnDrop(Arc<Notify>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// The Redis store of fleet rules. Create it once per `rate_limit_store`
/// config (off the request path) and share it; clones are cheap. Keep the
/// old one across reloads when [`config`](Self::config) is unchanged.
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.shared.config)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl RedisStore {
    /// Validates the config and starts connecting in the background. Does
    /// not wait for Redis and needs no Tokio runtime.
    pub fn new(config: &StoreConfig) -> Result<Self, Vec<String>> {
        Self::with_ca(config, None)
    }

    /// As [`new`](Self::new), trusting the PEM CA bundle `ca` (the file
    /// `config.ca` names, read by the caller) for `rediss://`.
    pub fn with_ca(config: &StoreConfig, ca: Option<&[u8]>) -> Result<Self, Vec<String>> {
        let errors = config.validate();
        if !errors.is_empty() {
            return Err(errors);
        }
        let client = client(config, ca).map_err(|e| vec![e])?;
        let shared = Arc::new(Shared {
            config: config.clone(),
            client,
            script: redis::Script::new(GCRA_LUA),
            slot: ArcSwapOption::empty(),
            generations: AtomicU64::new(0),
            wake: Notify::new(),
            errors: AtomicU64::new(0),
            timeouts_in_a_row: AtomicU32::new(0),
        });
        let stop = Arc::new(Notify::new());
        let (thread_shared, thread_stop) = (shared.clone(), stop.clone());
        std::thread::Builder::new()
            .name("ratelimit-redis".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    tokio::select! {
                        _ = thread_stop.notified() => {}
                        _ = connection_loop(thread_shared) => {}
                    }
                });
            })
            .map_err(|e| {
                vec![format!(
                    "rate_limit_store: cannot start the Redis thread: {e}"
                )]
            })?;
        Ok(RedisStore {
            shared,
            _stop: Arc::new(StopOnDrop(stop)),
        })
    }

    /// The config this store was built from.
    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// Failed store calls since creation (errors, timeouts, not connected):
    /// the source of `gateway_ratelimit_store_errors_total`.
    pub fn store_errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// Whether a connection is currently up.
    pub fn is_connected(&self) -> bool {
        self.shared.slot.load().is_some()
    }

    /// Waits up to `within` for the connection (startup, tests).
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.is_connected() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    pub(crate) fn key_prefix(&self) -> &str {
        self.shared.config.key_prefix()
    }

    /// Runs the GCRA step for `calls` in one round trip, within the timeout.
    pub(crate) async fn run(&self, calls: &[FleetCall]) -> Result<Vec<FleetReply>, StoreError> {
        let result = self.try_run(calls).await;
        if result.is_err() {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn try_run(&self, calls: &[FleetCall]) -> Result<Vec<FleetReply>, StoreError> {
        let sh = &self.shared;
        let Some(slot) = sh.slot.load_full() else {
            sh.wake.notify_one();
            return Err(StoreError::NotConnected);
        };
        let generation = slot.generation;
        let limit = sh.config.timeout();
        let answer = match &slot.conn {
            Conn::Single(c) => timeout(limit, gcra(&sh.script, calls, &mut c.clone())).await,
            Conn::Cluster(c) => {
                timeout(limit, async {
                    let mut all = Vec::with_capacity(3 * calls.len());
                    for call in calls {
                        let one = std::slice::from_ref(call);
                        all.extend(gcra(&sh.script, one, &mut c.clone()).await?);
                    }
                    Ok(all)
                })
                .await
            }
        };
        match answer {
            Ok(Ok(v)) => {
                sh.timeouts_in_a_row.store(0, Ordering::Relaxed);
                parse_replies(&v, calls.len()).ok_or(StoreError::BadReply)
            }
            Ok(Err(e)) => {
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error()
                {
                    sh.reconnect(generation);
                }
                Err(StoreError::Redis(e.to_string()))
            }
            Err(_) => {
                if sh.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1
                    >= TIMEOUTS_BEFORE_RECONNECT
                {
                    sh.timeouts_in_a_row.store(0, Ordering::Relaxed);
                    sh.reconnect(generation);
                }
                Err(StoreError::Timeout(limit))
            }
        }
    }
}

/// One GCRA script call for `calls` on `conn`.
async fn gcra<C: ConnectionLike>(
    script: &redis::Script,
    calls: &[FleetCall],
    conn: &mut C,
) -> redis::RedisResult<Vec<i64>> {
    let mut inv = script.prepare_invoke();
    for c in calls {
        inv.key(c.key.as_str());
    }
    for c in calls {
        inv.arg(c.interval_us).arg(c.burst);
    }
    inv.invoke_async::<Vec<i64>>(conn).await
}

fn parse_replies(v: &[i64], n: usize) -> Option<Vec<FleetReply>> {
    if v.len() != 3 * n {
        return None;
    }
    v.chunks_exact(3)
        .map(|c| {
            Some(FleetReply {
                allowed: c[0] == 1,
                remaining: u32::try_from(c[1].max(0)).unwrap_or(u32::MAX),
                reset: Duration::from_micros(u64::try_from(c[2]).ok()?),
            })
        })
        .collect()
}

/// Keeps a connection in the slot: connects (with backoff) whenever it is
/// empty, then sleeps until a caller reports it broken.
async fn connection_loop(sh: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let cfg =
        AsyncConnectionConfig::new().set_connection_timeout(Some(sh.config.connect_timeout()));
    loop {
        if sh.slot.load().is_some() {
            sh.wake.notified().await;
            continue;
        }
        let connect = async {
            match &sh.client {
                Client::Single(c) => c
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                    .map(Conn::Single),
                Client::Cluster(c) => c.get_async_connection().await.map(Conn::Cluster),
            }
        };
        match timeout(sh.config.connect_timeout(), connect).await {
            Ok(Ok(mut conn)) => {
                // Preload so requests start with a plain EVALSHA; a failure
                // here is harmless (invoke falls back to EVAL + load).
                let preload = async {
                    match &mut conn {
                        Conn::Single(c) => sh.script.load_async(c).await,
                        Conn::Cluster(c) => sh.script.load_async(c).await,
                    }
                };
                let _ = timeout(sh.config.connect_timeout(), preload).await;
                let generation = sh.generations.fetch_add(1, Ordering::Relaxed) + 1;
                sh.slot.store(Some(Arc::new(Slot { generation, conn })));
                sh.timeouts_in_a_row.store(0, Ordering::Relaxed);
                backoff = BACKOFF_MIN;
            }
            _ => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
