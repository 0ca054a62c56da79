//! The log store: CloudWatch Logs' groups, streams and events, on disk and
//! outside the key-value store (log data is large, append-only and read
//! by time, nothing like the cluster's records).
//!
//! Layout under the root: `{account}/{region}/{group, hex}/group.json`
//! (name, creation, retention, tags); `.../{stream, hex}/stream.json`
//! (name, creation, a random id that makes event ids stable); and the
//! stream's events in append-only segments `.../{first seq:020}.seg`, each
//! event `len u32 | timestamp i64 | ingestion i64 | message`, little-endian.
//! A batch is written whole and synced before it is acknowledged. Memory
//! holds only each segment's summary (sequence range, time range, size);
//! reads decode the segments they need.
//!
//! The API is synchronous (file I/O): async callers run it on a blocking
//! thread.

use berth_domain::logs::{LogsError, Pattern};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A segment is closed once it holds this many bytes.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
const RECORD_HEADER: usize = 4 + 8 + 8;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Logs(#[from] LogsError),
    #[error("log store: {0}")]
    Io(String),
}

fn io(e: std::io::Error) -> Error {
    Error::Io(e.to_string())
}

pub type Result<T> = std::result::Result<T, Error>;

/// Whose groups: an account in a region.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    pub account: String,
    pub region: String,
}

/// A group as DescribeLogGroups shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    /// Epoch ms.
    pub created: i64,
    pub retention_days: Option<i32>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(skip)]
    pub stored_bytes: u64,
}

/// A stream as DescribeLogStreams shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    pub name: String,
    pub created: i64,
    pub first_event: Option<i64>,
    pub last_event: Option<i64>,
    pub last_ingestion: Option<i64>,
    pub stored_bytes: u64,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its position in its stream, from 0.
    pub seq: u64,
    pub timestamp: i64,
    pub ingestion: i64,
    pub message: String,
}

/// One event of FilterLogEvents, with its stream and a stable id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub stream: String,
    pub event_id: String,
    pub event: Event,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StreamMeta {
    name: String,
    created: i64,
    /// Makes event ids unique across the group's streams.
    uid: u64,
}

#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    count: u64,
    min_ts: i64,
    max_ts: i64,
    path: PathBuf,
    bytes: u64,
}

struct StreamState {
    segments: Vec<Segment>,
    next_seq: u64,
    last_ingestion: Option<i64>,
    /// The open last segment, appended to.
    file: Option<File>,
}

struct Stream {
    dir: PathBuf,
    meta: StreamMeta,
    state: Mutex<StreamState>,
}

struct Group {
    dir: PathBuf,
    info: Mutex<GroupInfo>,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
}

pub struct LogStore {
    root: PathBuf,
    groups: RwLock<BTreeMap<(Owner, String), Arc<Group>>>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(v).map_err(|e| Error::Io(e.to_string()))?;
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(io)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

/// Decodes the first `len` bytes of a segment file.
fn decode(bytes: &[u8], first_seq: u64) -> Vec<Event> {
    let mut out = vec![];
    let mut at = 0usize;
    let mut seq = first_seq;
    while at + RECORD_HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let ts = i64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap_or_default());
        let ing = i64::from_le_bytes(bytes[at + 12..at + 20].try_into().unwrap_or_default());
        let end = at + RECORD_HEADER + len;
        if end > bytes.len() {
            break;
        }
        let message = String::from_utf8_lossy(&bytes[at + RECORD_HEADER..end]).into_owned();
        out.push(Event {
            seq,
            timestamp: ts,
            ingestion: ing,
            message,
        });
        seq += 1;
        at = end;
    }
    out
}

fn read_segment(s: &Segment) -> Result<Vec<Event>> {
    let mut f = File::open(&s.path).map_err(io)?;
    let mut buf = vec![0u8; s.bytes as usize];
    f.read_exact(&mut buf).map_err(io)?;
    Ok(decode(&buf, s.first_seq))
}

impl Stream {
    fn open(dir: PathBuf) -> Result<Stream> {
        let meta: StreamMeta = read_json(&dir.join("stream.json"))?;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        paths.sort();
        let mut segments = vec![];
        let mut next_seq = 0;
        let mut last_ingestion = None;
        for path in paths {
            let first_seq: u64 = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .unwrap_or(next_seq);
            let bytes = std::fs::read(&path).map_err(io)?;
            let events = decode(&bytes, first_seq);
            // A batch cut short by a crash was never acknowledged: its
            // partial tail is dropped.
            let good: u64 = events
                .iter()
                .map(|e| (RECORD_HEADER + e.message.len()) as u64)
                .sum();
            if good < bytes.len() as u64 {
                let f = OpenOptions::new().write(true).open(&path).map_err(io)?;
                f.set_len(good).map_err(io)?;
            }
            if events.is_empty() {
                continue;
            }
            next_seq = first_seq + events.len() as u64;
            last_ingestion = events.iter().map(|e| e.ingestion).max().max(last_ingestion);
            segments.push(Segment {
                first_seq,
                count: events.len() as u64,
                min_ts: events.iter().map(|e| e.timestamp).min().unwrap_or_default(),
                max_ts: events.iter().map(|e| e.timestamp).max().unwrap_or_default(),
                path,
                bytes: good,
            });
        }
        Ok(Stream {
            dir,
            meta,
            state: Mutex::new(StreamState {
                segments,
                next_seq,
                last_ingestion,
                file: None,
            }),
        })
    }

    fn info(&self) -> StreamInfo {
        let st = self.state.lock();
        StreamInfo {
            name: self.meta.name.clone(),
            created: self.meta.created,
            first_event: st.segments.iter().map(|s| s.min_ts).min(),
            last_event: st.segments.iter().map(|s| s.max_ts).max(),
            last_ingestion: st.last_ingestion,
            stored_bytes: st.segments.iter().map(|s| s.bytes).sum(),
        }
    }

    /// Appends events (timestamp, message) ingested at `now`, synced.
    fn append(&self, events: &[(i64, &str)], now: i64) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(events.iter().map(|e| RECORD_HEADER + e.1.len()).sum());
        for (ts, msg) in events {
            buf.extend_from_slice(&(msg.len() as u32).to_le_bytes());
            buf.extend_from_slice(&ts.to_le_bytes());
            buf.extend_from_slice(&now.to_le_bytes());
            buf.extend_from_slice(msg.as_bytes());
        }
        let mut st = self.state.lock();
        let roll = st.segments.last().is_none_or(|s| s.bytes >= SEGMENT_BYTES);
        if roll {
            let first_seq = st.next_seq;
            let path = self.dir.join(format!("{first_seq:020}.seg"));
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io)?;
            st.file = Some(f);
            st.segments.push(Segment {
                first_seq,
                count: 0,
                min_ts: i64::MAX,
                max_ts: i64::MIN,
                path,
                bytes: 0,
            });
        } else if st.file.is_none() {
            let path = st
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            let mut f = OpenOptions::new().append(true).open(&path).map_err(io)?;
            f.seek(SeekFrom::End(0)).map_err(io)?;
            st.file = Some(f);
        }
        let Some(f) = st.file.as_mut() else {
            return Err(Error::Io("no segment open".into()));
        };
        f.write_all(&buf).map_err(io)?;
        f.sync_data().map_err(io)?;
        let n = events.len() as u64;
        st.next_seq += n;
        st.last_ingestion = Some(now);
        if let Some(seg) = st.segments.last_mut() {
            seg.count += n;
            seg.bytes += buf.len() as u64;
            for (ts, _) in events {
                seg.min_ts = seg.min_ts.min(*ts);
                seg.max_ts = seg.max_ts.max(*ts);
            }
        }
        Ok(())
    }

    fn segments(&self) -> Vec<Segment> {
        self.state.lock().segments.clone()
    }

    /// Drops whole segments whose every event is older than `cutoff`.
    fn expire(&self, cutoff: i64) {
        let mut st = self.state.lock();
        let keep_last = st.segments.len().saturating_sub(1);
        let mut gone = 0;
        for s in st.segments.iter().take(keep_last) {
            if s.max_ts >= cutoff {
                break;
            }
            let _ = std::fs::remove_file(&s.path);
            gone += 1;
        }
        st.segments.drain(..gone);
    }
}

/// Which events GetLogEvents returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The oldest first, from this position on.
    Forward(u64),
    /// The newest before this position (`u64::MAX`: the end).
    Backward(u64),
}

impl LogStore {
    /// Opens (or makes) the store under `root`, reading what is there.
    pub fn open(root: impl Into<PathBuf>) -> Result<LogStore> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io)?;
        let mut groups = BTreeMap::new();
        for account in dirs(&root)? {
            for region in dirs(&account)? {
                for gdir in dirs(&region)? {
                    let info: GroupInfo = match read_json(&gdir.join("group.json")) {
                        Ok(i) => i,
                        Err(e) => {
                            tracing::warn!(dir = %gdir.display(), error = %e, "log group skipped");
                            continue;
                        }
                    };
                    let mut streams = BTreeMap::new();
                    for sdir in dirs(&gdir)? {
                        match Stream::open(sdir.clone()) {
                            Ok(s) => {
                                streams.insert(s.meta.name.clone(), Arc::new(s));
                            }
                            Err(e) => {
                                tracing::warn!(dir = %sdir.display(), error = %e, "log stream skipped")
                            }
                        }
                    }
                    let owner = Owner {
                        account: name_of(&account),
                        region: name_of(&region),
                    };
                    groups.insert(
                        (owner, info.name.clone()),
                        Arc::new(Group {
                            dir: gdir,
                            info: Mutex::new(info),
                            streams: RwLock::new(streams),
                        }),
                    );
                }
            }
        }
        Ok(LogStore {
            root,
            groups: RwLock::new(groups),
        })
    }

    fn group(&self, owner: &Owner, name: &str) -> Result<Arc<Group>> {
        self.groups
            .read()
            .get(&(owner.clone(), name.to_string()))
            .cloned()
            .ok_or_else(|| LogsError::no_group().into())
    }

    fn stream(&self, owner: &Owner, group: &str, stream: &str) -> Result<Arc<Stream>> {
        self.group(owner, group)?
            .streams
            .read()
            .get(stream)
            .cloned()
            .ok_or_else(|| LogsError::no_stream().into())
    }

    pub fn create_group(
        &self,
        owner: &Owner,
        name: &str,
        tags: BTreeMap<String, String>,
        now: i64,
    ) -> Result<()> {
        let mut groups = self.groups.write();
        let key = (owner.clone(), name.to_string());
        if groups.contains_key(&key) {
            return Err(LogsError::new(
                "ResourceAlreadyExistsException",
                "The specified log group already exists",
            )
            .into());
        }
        let dir = self
            .root
            .join(&owner.account)
            .join(&owner.region)
            .join(hex(name));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let info = GroupInfo {
            name: name.to_string(),
            created: now,
            retention_days: None,
            tags,
            stored_bytes: 0,
        };
        write_json(&dir.join("group.json"), &info)?;
        groups.insert(
            key,
            Arc::new(Group {
                dir,
                info: Mutex::new(info),
                streams: RwLock::default(),
            }),
        );
        Ok(())
    }

    pub fn delete_group(&self, owner: &Owner, name: &str) -> Result<()> {
        let group = self
            .groups
            .write()
            .remove(&(owner.clone(), name.to_string()))
            .ok_or_else(LogsError::no_group)?;
        std::fs::remove_dir_all(&group.dir).map_err(io)
    }

    /// The owner's groups whose name starts with `prefix`, by name.
    pub fn groups(&self, owner: &Owner, prefix: &str) -> Vec<GroupInfo> {
        let groups: Vec<Arc<Group>> = self
            .groups
            .read()
            .range((owner.clone(), prefix.to_string())..)
            .take_while(|((o, n), _)| o == owner && n.starts_with(prefix))
            .map(|(_, g)| g.clone())
            .collect();
        groups
            .iter()
            .map(|g| {
                let mut info = g.info.lock().clone();
                info.stored_bytes = g
                    .streams
                    .read()
                    .values()
                    .map(|s| s.info().stored_bytes)
                    .sum();
                info
            })
            .collect()
    }

    pub fn group_info(&self, owner: &Owner, name: &str) -> Result<GroupInfo> {
        Ok(self.group(owner, name)?.info.lock().clone())
    }

    /// Changes a group's record (retention, tags) with `change`.
    pub fn update_group(
        &self,
        owner: &Owner,
        name: &str,
        change: impl FnOnce(&mut GroupInfo),
    ) -> Result<()> {
        let g = self.group(owner, name)?;
        let mut info = g.info.lock();
        let mut next = info.clone();
        change(&mut next);
        write_json(&g.dir.join("group.json"), &next)?;
        *info = next;
        Ok(())
    }

    pub fn create_stream(&self, owner: &Owner, group: &str, name: &str, now: i64) -> Result<()> {
        let g = self.group(owner, group)?;
        let mut streams = g.streams.write();
        if streams.contains_key(name) {
            return Err(LogsError::new(
                "ResourceAlreadyExistsException",
                "The specified log stream already exists",
            )
            .into());
        }
        let dir = g.dir.join(hex(name));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let meta = StreamMeta {
            name: name.to_string(),
            created: now,
            uid: rand::random::<u64>() % 10_000_000_000_000_000_000,
        };
        write_json(&dir.join("stream.json"), &meta)?;
        streams.insert(
            name.to_string(),
            Arc::new(Stream {
                dir,
                meta,
                state: Mutex::new(StreamState {
                    segments: vec![],
                    next_seq: 0,
                    last_ingestion: None,
                    file: None,
                }),
            }),
        );
        Ok(())
    }

    pub fn delete_stream(&self, owner: &Owner, group: &str, name: &str) -> Result<()> {
        let g = self.group(owner, group)?;
        let s = g
            .streams
            .write()
            .remove(name)
            .ok_or_else(LogsError::no_stream)?;
        std::fs::remove_dir_all(&s.dir).map_err(io)
    }

    /// The group's streams whose name starts with `prefix`, by name.
    pub fn streams(&self, owner: &Owner, group: &str, prefix: &str) -> Result<Vec<StreamInfo>> {
        let g = self.group(owner, group)?;
        let streams: Vec<Arc<Stream>> = g
            .streams
            .read()
            .range(prefix.to_string()..)
            .take_while(|(n, _)| n.starts_with(prefix))
            .map(|(_, s)| s.clone())
            .collect();
        Ok(streams.iter().map(|s| s.info()).collect())
    }

    /// Appends a checked batch to a stream.
    pub fn put(
        &self,
        owner: &Owner,
        group: &str,
        stream: &str,
        events: &[(i64, &str)],
        now: i64,
    ) -> Result<()> {
        self.stream(owner, group, stream)?.append(events, now)
    }

    /// The retention cutoff of a group: events older are gone.
    fn cutoff(&self, owner: &Owner, group: &str, now: i64) -> Result<i64> {
        Ok(self
            .group_info(owner, group)?
            .retention_days
            .map_or(i64::MIN, |d| now - i64::from(d) * DAY_MS))
    }

    /// GetLogEvents: up to `limit` events of the stream in `[start, end)`
    /// from `from`, oldest first.
    #[allow(clippy::too_many_arguments)]
    pub fn get(
        &self,
        owner: &Owner,
        group: &str,
        stream: &str,
        start: Option<i64>,
        end: Option<i64>,
        from: From,
        limit: usize,
        now: i64,
    ) -> Result<Vec<Event>> {
        let cutoff = self.cutoff(owner, group, now)?;
        let s = self.stream(owner, group, stream)?;
        let lo = start.unwrap_or(i64::MIN).max(cutoff);
        let hi = end.unwrap_or(i64::MAX);
        let keep = |e: &Event| e.timestamp >= lo && e.timestamp < hi;
        let segments: Vec<Segment> = s
            .segments()
            .into_iter()
            .filter(|g| g.count > 0 && g.max_ts >= lo && g.min_ts < hi)
            .collect();
        let mut out = vec![];
        match from {
            From::Forward(at) => {
                for g in segments.iter().filter(|g| g.first_seq + g.count > at) {
                    for e in read_segment(g)? {
                        if e.seq >= at && keep(&e) {
                            out.push(e);
                            if out.len() == limit {
                                return Ok(out);
                            }
                        }
                    }
                }
            }
            From::Backward(before) => {
                for g in segments.iter().rev().filter(|g| g.first_seq < before) {
                    let mut events: Vec<Event> = read_segment(g)?
                        .into_iter()
                        .filter(|e| e.seq < before && keep(e))
                        .collect();
                    while let Some(e) = events.pop() {
                        out.push(e);
                        if out.len() == limit {
                            out.reverse();
                            return Ok(out);
                        }
                    }
                }
                out.reverse();
            }
        }
        Ok(out)
    }

    /// FilterLogEvents: events of the named streams (all when `names` is
    /// empty) in `[start, end)` matching `pattern`, ordered by time, after
    /// `after` (a previous page's last `(timestamp, event id)`), up to
    /// `limit`; and whether more remain.
    #[allow(clippy::too_many_arguments)]
    pub fn filter(
        &self,
        owner: &Owner,
        group: &str,
        names: &[String],
        prefix: Option<&str>,
        start: Option<i64>,
        end: Option<i64>,
        pattern: &Pattern,
        after: Option<(i64, String)>,
        limit: usize,
        now: i64,
    ) -> Result<(Vec<Found>, bool, Vec<String>)> {
        let cutoff = self.cutoff(owner, group, now)?;
        let g = self.group(owner, group)?;
        let streams: Vec<Arc<Stream>> = g
            .streams
            .read()
            .values()
            .filter(|s| names.is_empty() || names.contains(&s.meta.name))
            .filter(|s| prefix.is_none_or(|p| s.meta.name.starts_with(p)))
            .cloned()
            .collect();
        let lo = start.unwrap_or(i64::MIN).max(cutoff);
        let hi = end.unwrap_or(i64::MAX);
        let mut found: Vec<Found> = vec![];
        let mut searched = vec![];
        for s in &streams {
            searched.push(s.meta.name.clone());
            let mut mine = vec![];
            for seg in s
                .segments()
                .iter()
                .filter(|x| x.count > 0 && x.max_ts >= lo && x.min_ts < hi)
            {
                for e in read_segment(seg)? {
                    if e.timestamp < lo || e.timestamp >= hi || !pattern.matches(&e.message) {
                        continue;
                    }
                    let id = format!("{:020}{:020}", s.meta.uid, e.seq);
                    if let Some((t, last)) = &after {
                        if (e.timestamp, &id) <= (*t, last) {
                            continue;
                        }
                    }
                    mine.push(Found {
                        stream: s.meta.name.clone(),
                        event_id: id,
                        event: e,
                    });
                }
            }
            // Only the first `limit` of any one stream can be on this page.
            mine.sort_by(|a, b| {
                (a.event.timestamp, &a.event_id).cmp(&(b.event.timestamp, &b.event_id))
            });
            mine.truncate(limit + 1);
            found.extend(mine);
        }
        found.sort_by(|a, b| {
            (a.event.timestamp, &a.event_id).cmp(&(b.event.timestamp, &b.event_id))
        });
        let more = found.len() > limit;
        found.truncate(limit);
        Ok((found, more, searched))
    }

    /// Enforces every group's retention: segments wholly older go.
    pub fn expire(&self, now: i64) {
        let groups: Vec<Arc<Group>> = self.groups.read().values().cloned().collect();
        for g in groups {
            let Some(days) = g.info.lock().retention_days else {
                continue;
            };
            let cutoff = now - i64::from(days) * DAY_MS;
            for s in g.streams.read().values() {
                s.expire(cutoff);
            }
        }
    }
}

fn dirs(p: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            account: "1".into(),
            region: "us-east-1".into(),
        }
    }

    #[test]
    fn events_survive_a_reopen_and_read_both_ways() {
        let dir = tempfile::tempdir().expect("tmp");
        let o = owner();
        {
            let st = LogStore::open(dir.path()).expect("open");
            st.create_group(&o, "/ecs/app", BTreeMap::new(), 1)
                .expect("group");
            assert!(st.create_group(&o, "/ecs/app", BTreeMap::new(), 1).is_err());
            st.create_stream(&o, "/ecs/app", "web/1", 2)
                .expect("stream");
            let batch: Vec<(i64, String)> =
                (0..10).map(|i| (100 + i, format!("line {i}"))).collect();
            let refs: Vec<(i64, &str)> = batch.iter().map(|(t, m)| (*t, m.as_str())).collect();
            st.put(&o, "/ecs/app", "web/1", &refs, 500).expect("put");
        }
        let st = LogStore::open(dir.path()).expect("reopen");
        let get = |from, limit| {
            st.get(&o, "/ecs/app", "web/1", None, None, from, limit, 1000)
                .expect("get")
        };
        let first = get(From::Forward(0), 3);
        assert_eq!(
            first.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["line 0", "line 1", "line 2"]
        );
        assert_eq!(first[0].ingestion, 500);
        let next = get(From::Forward(3), 100);
        assert_eq!(next.len(), 7);
        let newest = get(From::Backward(u64::MAX), 2);
        assert_eq!(newest.iter().map(|e| e.seq).collect::<Vec<_>>(), [8, 9]);
        let before = get(From::Backward(8), 3);
        assert_eq!(before.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6, 7]);
        let info = &st.streams(&o, "/ecs/app", "").expect("streams")[0];
        assert_eq!((info.first_event, info.last_event), (Some(100), Some(109)));
        assert!(st.groups(&o, "/ecs")[0].stored_bytes > 0);
        st.delete_group(&o, "/ecs/app").expect("delete");
        assert!(st.groups(&o, "").is_empty());
        assert!(LogStore::open(dir.path())
            .expect("again")
            .groups(&o, "")
            .is_empty());
    }

    #[test]
    fn filtering_interleaves_streams_by_time_with_stable_ids_and_pages() {
        let dir = tempfile::tempdir().expect("tmp");
        let st = LogStore::open(dir.path()).expect("open");
        let o = owner();
        st.create_group(&o, "g", BTreeMap::new(), 0).expect("group");
        for s in ["a", "b"] {
            st.create_stream(&o, "g", s, 0).expect("stream");
        }
        st.put(
            &o,
            "g",
            "a",
            &[(1, "ERROR one"), (3, "INFO x"), (5, "ERROR three")],
            9,
        )
        .expect("a");
        st.put(&o, "g", "b", &[(2, "ERROR two"), (4, "ERROR four")], 9)
            .expect("b");
        let p = Pattern::parse("ERROR").expect("pattern");
        let page = |after, limit| {
            st.filter(&o, "g", &[], None, None, None, &p, after, limit, 10)
                .expect("filter")
        };
        let (first, more, searched) = page(None, 2);
        assert!(more);
        assert_eq!(searched, ["a", "b"]);
        assert_eq!(
            first
                .iter()
                .map(|f| f.event.message.as_str())
                .collect::<Vec<_>>(),
            ["ERROR one", "ERROR two"]
        );
        let last = first
            .last()
            .map(|f| (f.event.timestamp, f.event_id.clone()));
        let (rest, more, _) = page(last, 10);
        assert!(!more);
        assert_eq!(
            rest.iter()
                .map(|f| f.event.message.as_str())
                .collect::<Vec<_>>(),
            ["ERROR four", "ERROR three"]
        );
        assert_eq!(page(None, 10).0[1].event_id, first[1].event_id);
        let (only_b, _, _) = st
            .filter(
                &o,
                "g",
                &["b".into()],
                None,
                Some(3),
                None,
                &p,
                None,
                10,
                10,
            )
            .expect("b");
        assert_eq!(only_b.len(), 1);
    }

    #[test]
    fn retention_hides_and_then_removes_old_events() {
        let dir = tempfile::tempdir().expect("tmp");
        let st = LogStore::open(dir.path()).expect("open");
        let o = owner();
        st.create_group(&o, "g", BTreeMap::new(), 0).expect("group");
        st.create_stream(&o, "g", "s", 0).expect("stream");
        st.put(&o, "g", "s", &[(DAY_MS, "old")], DAY_MS)
            .expect("put");
        st.put(&o, "g", "s", &[(10 * DAY_MS, "new")], 10 * DAY_MS)
            .expect("put");
        st.update_group(&o, "g", |g| g.retention_days = Some(1))
            .expect("retention");
        let now = 10 * DAY_MS + 1;
        let got = st
            .get(&o, "g", "s", None, None, From::Forward(0), 10, now)
            .expect("get");
        assert_eq!(
            got.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["new"]
        );
        st.expire(now);
        assert_eq!(
            LogStore::open(dir.path())
                .expect("reopen")
                .group_info(&o, "g")
                .expect("g")
                .retention_days,
            Some(1)
        );
    }
}
