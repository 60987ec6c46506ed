//! Cluster-mode history on Redis (SPEC-v2 §2.6): per stream a Redis Stream
//! `wsgate:s:{name}` (entry IDs `0-{offset}`, one field `m`: the message
//! JSON exactly as delivered), a hash `wsgate:m:{name}` (`epoch`, `top`)
//! and a hash of last values `wsgate:lv:{name}`.
//!
//! One Lua script per append assigns the offset (a new epoch when the meta
//! is missing), `XADD`s, trims to exactly `MAXLEN --history-size` and sets
//! the TTLs: the append is the only Redis round trip of a publish. Reads
//! are one `MULTI` (meta, first entry, range). Everything here is async and
//! must only be awaited on the tokio side, never on a shard thread.
//!
//! While Redis is away an append fails: the caller delivers without a
//! position and this store remembers the stream; the first append that
//! succeeds afterwards deletes the metadata of every remembered stream (so
//! its next append starts a new epoch and no client elsewhere "recovers"
//! a history lacking the unrecorded events). The memory of such streams is
//! bounded: past it, every stream's metadata is deleted instead.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::{RedisError, Script, Value as RedisValue};
use tokio::sync::oneshot;

use super::{Epoch, HistorySettings, LastValue, Meta, Stored, StreamPosition};
use crate::ws::frame;

/// KEYS: stream, meta, last values. ARGV: the message JSON up to the
/// epoch's opening quote, MAXLEN, stream TTL ms, meta TTL ms, last-value
/// TTL ms, a fresh epoch (used when the meta is missing), the channel and
/// the backplane message up to its `message` string (empty: no
/// `PUBLISH`), then pairs `S|E`, key of last-value changes. Returns
/// `{epoch, offset}`.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local top
if not epoch then
  epoch = ARGV[6]
  top = 1
  redis.call('DEL', KEYS[1], KEYS[3])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'top', 1)
else
  top = redis.call('HINCRBY', KEYS[2], 'top', 1)
end
local message = ARGV[1] .. epoch .. '","offset":' .. top .. '}}'
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '0-' .. top, 'm', message)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if ARGV[8] ~= '' then
  redis.call('PUBLISH', ARGV[7], ARGV[8] .. cjson.encode(message) .. '}')
end
local i = 9
while ARGV[i] do
  if ARGV[i] == 'S' then
    redis.call('HSET', KEYS[3], ARGV[i + 1], message)
  else
    redis.call('HDEL', KEYS[3], ARGV[i + 1])
  end
  i = i + 2
end
if i > 9 then redis.call('PEXPIRE', KEYS[3], ARGV[5]) end
return {epoch, top}
"#,
    )
});

/// How long a publish waits for its append before delivering unrecorded.
const APPEND_TIMEOUT: Duration = Duration::from_millis(500);

fn keys(name: &str) -> [String; 3] {
    [
        format!("wsgate:s:{name}"),
        format!("wsgate:m:{name}"),
        format!("wsgate:lv:{name}"),
    ]
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Streams remembered at most; past it every stream is renewed instead.
const MAX_UNRECORDED: usize = 100_000;
/// Streams renewed per `DEL` pipeline.
const RENEW_BATCH: usize = 1024;

/// The streams to renew, each with the mark of its last unrecorded
/// delivery (so a stream marked again during a renewal stays listed).
#[derive(Default)]
struct Unrecorded {
    names: HashMap<Arc<str>, u64>,
    marks: u64,
    /// More than [`MAX_UNRECORDED`] streams: renew them all.
    overflowed: bool,
    /// The mark of the last delivery that did not fit.
    overflowed_at: u64,
}

impl Unrecorded {
    fn mark(&mut self, name: &Arc<str>) {
        self.marks += 1;
        if self.names.len() >= MAX_UNRECORDED && !self.names.contains_key(name) {
            self.overflowed = true;
            self.overflowed_at = self.marks;
            return;
        }
        self.names.insert(name.clone(), self.marks);
    }
}

/// What a read gives (shared by every caller of a coalesced read).
pub type ReadAnswer = Result<Option<(Meta, Vec<Stored>)>, Arc<RedisError>>;

/// A read's identity: identical concurrent reads share one round trip.
type ReadKey = (Box<str>, u64, usize);

pub struct RedisStore {
    commands: ConnectionManager,
    /// The backplane channel the script publishes recorded events on.
    channel: String,
    settings: HistorySettings,
    /// Streams that delivered unrecorded events while Redis was away.
    unrecorded: Mutex<Unrecorded>,
    /// Reads in flight and who else waits for each (bounded by the
    /// callers: each waits for its own answer).
    in_flight: Mutex<HashMap<ReadKey, Vec<oneshot::Sender<ReadAnswer>>>>,
}

/// Takes a coalesced read's entry out when the leader finishes or is
/// dropped (its waiters then see a closed channel and read themselves).
struct Leader<'a> {
    store: &'a RedisStore,
    key: Option<ReadKey>,
}

impl Leader<'_> {
    fn finish(mut self, answer: &ReadAnswer) {
        if let Some(key) = self.key.take() {
            let waiters = self.store.in_flight.lock().remove(&key);
            for waiter in waiters.into_iter().flatten() {
                let _ = waiter.send(answer.clone());
            }
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.store.in_flight.lock().remove(&key);
        }
    }
}

impl RedisStore {
    pub fn new(
        commands: ConnectionManager,
        channel: String,
        settings: HistorySettings,
    ) -> RedisStore {
        RedisStore {
            commands,
            channel,
            settings,
            unrecorded: Mutex::new(Unrecorded::default()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Appends an event whose frame `encode` builds for a position; `None`
    /// when Redis did not take it in time, or `reachable` says it is away
    /// (deliver it without a position: a publish never waits on a Redis
    /// that is gone). `announce`: the backplane message up to its
    /// `"message":` (the script `PUBLISH`es it with the message as a JSON
    /// string, so every node gets a stream's events in offset order).
    pub async fn append(
        &self,
        name: &Arc<str>,
        last_values: &[LastValue],
        encode: &mut (dyn FnMut(&StreamPosition) -> Arc<[u8]> + Send),
        reachable: bool,
        announce: Option<&str>,
    ) -> Option<(StreamPosition, Arc<[u8]>)> {
        if !reachable {
            self.unrecorded.lock().mark(name);
            return None;
        }
        // The position is the message's last field: encode once with a
        // stand-in to learn the bytes before the epoch; the script adds the
        // epoch and offset, and the same encoding of the real position gives
        // the same bytes locally.
        let probe = encode(&StreamPosition {
            name: name.clone(),
            epoch: Epoch(*b"00000000"),
            offset: 0,
        });
        let payload = &probe[probe.len() - frame::payload_len(&probe)..];
        let marker = b"\"epoch\":\"";
        let cut = payload
            .windows(marker.len())
            .rposition(|w| w == marker)
            .map(|at| at + marker.len())?;
        let [stream_key, meta_key, lv_key] = keys(name);
        let mut invocation = APPEND.prepare_invoke();
        invocation
            .key(&stream_key)
            .key(&meta_key)
            .key(&lv_key)
            .arg(&payload[..cut])
            .arg(self.settings.size)
            .arg(millis(self.settings.ttl))
            .arg(millis(self.settings.meta_ttl))
            .arg(millis(self.settings.last_value_ttl))
            .arg(Epoch::random().as_str())
            .arg(&self.channel)
            .arg(announce.unwrap_or(""));
        for change in last_values {
            match change {
                LastValue::Store(key) => invocation.arg("S").arg(key),
                LastValue::End(key) => invocation.arg("E").arg(key),
            };
        }
        self.forget_unrecorded().await;
        let mut commands = self.commands.clone();
        // A late answer may still have been recorded: the stream is then
        // marked like any unrecorded one and gets a new epoch (never a
        // history with a hole).
        let answer = tokio::time::timeout(APPEND_TIMEOUT, invocation.invoke_async(&mut commands));
        let answer: Result<(String, u64), String> = match answer.await {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        };
        let (epoch, offset) = match answer {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(%error, stream = %name, "history append failed");
                self.unrecorded.lock().mark(name);
                return None;
            }
        };
        let Some(epoch) = Epoch::parse(&epoch) else {
            // Not an epoch of ours (written by hand?): renew it.
            self.unrecorded.lock().mark(name);
            return None;
        };
        let position = StreamPosition {
            name: name.clone(),
            epoch,
            offset,
        };
        let frame = encode(&position);
        Some((position, frame))
    }

    /// Redis is reachable again (or still): drop the keys of every stream
    /// that went out unrecorded (up to [`RENEW_BATCH`] per call), so each
    /// gets a new epoch; after an overflow, the metadata of every stream.
    pub async fn forget_unrecorded(&self) {
        let (names, everything, marks) = {
            let unrecorded = self.unrecorded.lock();
            if unrecorded.names.is_empty() && !unrecorded.overflowed {
                return;
            }
            let names: Vec<(Arc<str>, u64)> = unrecorded
                .names
                .iter()
                .take(RENEW_BATCH)
                .map(|(name, mark)| (name.clone(), *mark))
                .collect();
            (names, unrecorded.overflowed, unrecorded.marks)
        };
        let mut commands = self.commands.clone();
        if everything {
            if self.forget_every_meta().await.is_ok() {
                let mut unrecorded = self.unrecorded.lock();
                unrecorded.overflowed = unrecorded.overflowed_at > marks;
                unrecorded.names.retain(|_, mark| *mark > marks);
            }
            return;
        }
        let mut pipe = redis::pipe();
        for (name, _) in &names {
            let [stream_key, meta_key, lv_key] = keys(name);
            pipe.del(&[stream_key, meta_key, lv_key]).ignore();
        }
        if pipe.query_async::<()>(&mut commands).await.is_ok() {
            let mut unrecorded = self.unrecorded.lock();
            for (name, mark) in &names {
                // Marked again meanwhile: that delivery may postdate the
                // DEL, so the stream is renewed once more.
                if unrecorded.names.get(name) == Some(mark) {
                    unrecorded.names.remove(name);
                }
            }
        }
    }

    /// Deletes every stream's metadata (`SCAN` + `DEL`): each gets a new
    /// epoch at its next append (whose script drops its events then).
    async fn forget_every_meta(&self) -> Result<(), RedisError> {
        let mut commands = self.commands.clone();
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("wsgate:m:*")
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut commands)
                .await?;
            if !found.is_empty() {
                redis::cmd("DEL")
                    .arg(&found)
                    .query_async::<()>(&mut commands)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// The metadata and up to `limit` events from offset `from`, read in
    /// one transaction. `Ok(None)`: no metadata. A read identical to one in
    /// flight waits for that one's answer instead of asking Redis again.
    pub async fn read(&self, name: &str, from: u64, limit: usize) -> ReadAnswer {
        let key: ReadKey = (name.into(), from, limit);
        let waiting = {
            let mut in_flight = self.in_flight.lock();
            match in_flight.get_mut(&key) {
                Some(waiters) => {
                    let (tell, answer) = oneshot::channel();
                    waiters.push(tell);
                    Some(answer)
                }
                None => {
                    in_flight.insert(key.clone(), Vec::new());
                    None
                }
            }
        };
        if let Some(answer) = waiting {
            if let Ok(answer) = answer.await {
                return answer;
            }
            return self.read_once(name, from, limit).await.map_err(Arc::new);
        }
        let leader = Leader {
            store: self,
            key: Some(key),
        };
        let answer = self.read_once(name, from, limit).await.map_err(Arc::new);
        leader.finish(&answer);
        answer
    }

    async fn read_once(
        &self,
        name: &str,
        from: u64,
        limit: usize,
    ) -> Result<Option<(Meta, Vec<Stored>)>, RedisError> {
        let [stream_key, meta_key, _] = keys(name);
        let mut commands = self.commands.clone();
        let (meta, first, range): (Vec<Option<String>>, RedisValue, RedisValue) = redis::pipe()
            .atomic()
            .cmd("HMGET")
            .arg(&meta_key)
            .arg("epoch")
            .arg("top")
            .cmd("XRANGE")
            .arg(&stream_key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("XRANGE")
            .arg(&stream_key)
            .arg(format!("0-{}", from.max(1)))
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1))
            .query_async(&mut commands)
            .await?;
        let (Some(epoch), Some(top)) = (
            meta.first()
                .and_then(|e| e.as_deref())
                .and_then(Epoch::parse),
            meta.get(1).and_then(|t| t.as_deref()?.parse::<u64>().ok()),
        ) else {
            return Ok(None);
        };
        let first = entries(first)
            .first()
            .map_or(top + 1, |stored| stored.offset);
        let mut events = entries(range);
        events.truncate(limit);
        Ok(Some((Meta { epoch, top, first }, events)))
    }

    /// Drops the stream, its events and last values; `true` when it had
    /// metadata.
    pub async fn delete(&self, name: &str) -> Result<bool, RedisError> {
        let [stream_key, meta_key, lv_key] = keys(name);
        let mut commands = self.commands.clone();
        let (had_meta, _): (bool, u64) = redis::pipe()
            .atomic()
            .exists(&meta_key)
            .del(&[stream_key, meta_key, lv_key])
            .query_async(&mut commands)
            .await?;
        Ok(had_meta)
    }
}

/// The entries of an `XRANGE` answer as stored frames (an entry that is
/// not ours is skipped).
fn entries(answer: RedisValue) -> Vec<Stored> {
    let RedisValue::Array(items) = answer else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let RedisValue::Array(mut parts) = item else {
                return None;
            };
            let fields = parts.pop()?;
            let id: String = redis::from_redis_value(parts.pop()?).ok()?;
            let offset = id.strip_prefix("0-")?.parse().ok()?;
            let fields: Vec<Vec<u8>> = redis::from_redis_value(fields).ok()?;
            let message = fields.get(1)?;
            let frame: Arc<[u8]> =
                Arc::from(frame::text_frame(|buf| buf.extend_from_slice(message)));
            Some(Stored { offset, frame })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrecorded_streams_are_bounded_and_overflow_renews_everything() {
        let mut unrecorded = Unrecorded::default();
        let first: Arc<str> = Arc::from("user:0");
        unrecorded.mark(&first);
        unrecorded.mark(&first);
        assert_eq!(unrecorded.names.len(), 1);
        assert_eq!(
            unrecorded.names.get(&first),
            Some(&2),
            "the last mark counts"
        );
        for i in 1..MAX_UNRECORDED {
            unrecorded.mark(&Arc::from(format!("user:{i}")));
        }
        assert!(!unrecorded.overflowed);
        // A listed stream still fits; a new one past the bound overflows.
        unrecorded.mark(&first);
        assert!(!unrecorded.overflowed);
        unrecorded.mark(&Arc::from("one too many"));
        assert!(unrecorded.overflowed);
        assert_eq!(unrecorded.names.len(), MAX_UNRECORDED);
        assert_eq!(unrecorded.overflowed_at, unrecorded.marks);
    }
}
