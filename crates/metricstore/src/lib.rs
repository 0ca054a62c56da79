//! The metric store: CloudWatch's datapoints, outside the key-value store
//! (metrics are many small numbers read by time range, nothing like the
//! cluster's records).
//!
//! A datapoint is aggregated as it arrives into a bucket per series
//! (owner, namespace, metric name, dimensions, unit) at each of
//! CloudWatch's storage resolutions: 1 s (high-resolution data only), 60 s,
//! 300 s and 3600 s, kept 3 hours, 15 days, 63 days and 455 days. A bucket
//! holds the sample count, sum, minimum and maximum, and while every value
//! it holds is known, a sketch of them for percentiles. Buckets merge
//! exactly, so a bucket written twice (late data) or rolled up reads the
//! same.
//!
//! On disk under the root: `catalog` (the series, appended as they first
//! appear), `wal-{seq}` (each accepted batch, synced before it is
//! acknowledged) and `blk-{res}-{seq}` (immutable blocks: the buckets of
//! one resolution sealed from memory, with an index by series). Memory
//! holds the buckets written since the last seal and each block's index.
//! A block names the write-ahead logs it covers and the blocks it
//! replaces, so a crash between writing a block and removing what it
//! covers never counts a datapoint twice.
//!
//! The API is synchronous (file I/O): async callers run it on a blocking
//! thread.

mod codec;
pub mod sketch;

use codec::Reader;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sketch::Sketch;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Storage resolutions in seconds, finest first.
pub const RESOLUTIONS: [i64; 4] = [1, 60, 300, 3600];

/// How long data of a resolution is kept, in seconds.
pub fn retention(resolution: i64) -> i64 {
    const DAY: i64 = 86_400;
    match resolution {
        1 => 3 * 3600,
        60 => 15 * DAY,
        300 => 63 * DAY,
        _ => 455 * DAY,
    }
}

/// Buckets in memory are sealed into blocks at least this often.
const SEAL_SECS: i64 = 600;
/// ... or once memory holds this many buckets.
const SEAL_BUCKETS: usize = 2_000_000;
const BLOCK_MAGIC: &[u8; 4] = b"BMB1";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metric store: {0}")]
    Io(String),
}

fn io(e: std::io::Error) -> Error {
    Error::Io(e.to_string())
}

pub type Result<T> = std::result::Result<T, Error>;

/// Whose metrics: an account in a region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    pub account: String,
    pub region: String,
}

/// A metric: its namespace, name and dimensions (sorted by name, as
/// CloudWatch treats them as a set).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MetricId {
    pub namespace: String,
    pub name: String,
    pub dimensions: Vec<(String, String)>,
}

impl MetricId {
    pub fn new(namespace: &str, name: &str, mut dimensions: Vec<(String, String)>) -> MetricId {
        dimensions.sort();
        MetricId {
            namespace: namespace.to_string(),
            name: name.to_string(),
            dimensions,
        }
    }
}

/// The aggregate of the values that fell in one period.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub count: f64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The values themselves, sketched, while all of them are known (not
    /// when a statistic set that hides them was merged in).
    pub sketch: Option<Sketch>,
}

impl Bucket {
    pub fn value(v: f64) -> Bucket {
        Bucket::values(&[(v, 1.0)])
    }

    /// Values with the number of times each occurred (`Values` and
    /// `Counts`).
    pub fn values(values: &[(f64, f64)]) -> Bucket {
        let mut sketch = Sketch::default();
        let mut b = Bucket {
            count: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sketch: None,
        };
        for (v, n) in values {
            b.count += n;
            b.sum += v * n;
            b.min = b.min.min(*v);
            b.max = b.max.max(*v);
            sketch.add(*v, *n);
        }
        b.sketch = Some(sketch);
        b
    }

    /// A statistic set: its values are unknown unless they are all the
    /// same (then percentiles still work, as CloudWatch's do).
    pub fn set(count: f64, sum: f64, min: f64, max: f64) -> Bucket {
        let uniform = min == max && (sum - min * count).abs() <= f64::EPSILON * sum.abs().max(1.0);
        Bucket {
            count,
            sum,
            min,
            max,
            sketch: uniform.then(|| {
                let mut s = Sketch::default();
                s.add(min, count);
                s
            }),
        }
    }

    pub fn merge(&mut self, other: &Bucket) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sketch = match (self.sketch.take(), &other.sketch) {
            (Some(mut a), Some(b)) => {
                a.merge(b);
                Some(a)
            }
            _ => None,
        };
    }

    pub fn average(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            0.0
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.count, self.sum, self.min, self.max] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        match &self.sketch {
            Some(s) => {
                out.push(1);
                s.encode(out);
            }
            None => out.push(0),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Option<Bucket> {
        let (count, sum, min, max) = (r.f64()?, r.f64()?, r.f64()?, r.f64()?);
        let sketch = match r.u8()? {
            0 => None,
            _ => Some(Sketch::decode(r)?),
        };
        Some(Bucket {
            count,
            sum,
            min,
            max,
            sketch,
        })
    }
}

/// One accepted datapoint (or set of values) of a metric.
#[derive(Debug, Clone)]
pub struct Datum {
    pub metric: MetricId,
    /// CloudWatch's unit name; `None` when not given.
    pub unit: String,
    /// Epoch seconds (whole: CloudWatch's finest resolution).
    pub timestamp: i64,
    /// Storage resolution 1: kept per second as well.
    pub high_resolution: bool,
    pub bucket: Bucket,
}

/// A series: one unit's data of one metric of one owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct SeriesKey {
    owner: Owner,
    metric: MetricId,
    unit: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CatalogRecord {
    id: u32,
    #[serde(flatten)]
    key: SeriesKey,
}

struct Series {
    key: SeriesKey,
    /// The newest datapoint's time (epoch seconds), for ListMetrics.
    last: i64,
}

/// Buckets by resolution (index into `RESOLUTIONS`), then by start.
type Buckets = [BTreeMap<i64, Bucket>; 4];

struct Block {
    resolution: i64,
    seq: u64,
    /// When it was written (epoch seconds): blocks of one day merge.
    created: i64,
    path: PathBuf,
    min: i64,
    max: i64,
    /// series -> (offset, length, newest bucket)
    index: HashMap<u32, (u64, u32, i64)>,
}

struct Inner {
    series: Vec<Series>,
    by_key: HashMap<SeriesKey, u32>,
    /// A metric's series (one per unit), so reads find them without a scan.
    by_metric: HashMap<(Owner, MetricId), Vec<u32>>,
    catalog: File,
    head: HashMap<u32, Buckets>,
    head_buckets: usize,
    /// When the oldest unsealed write came (epoch seconds).
    head_since: Option<i64>,
    wal: File,
    wal_seq: u64,
    blocks: Vec<Block>,
    next_block: u64,
}

/// The store. Writes take the lock exclusively; reads share it.
pub struct MetricStore {
    root: PathBuf,
    inner: RwLock<Inner>,
}

/// What a read covers: `[start, end)` in epoch seconds, merged into
/// periods of `period` seconds counted from `start` (which callers round
/// as CloudWatch does), read from data kept at `resolution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
    pub period: i64,
    pub resolution: i64,
}

/// A datapoint as reads answer it: the merged bucket of one period, and
/// the unit its data was written with (`None` when several were).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub timestamp: i64,
    pub bucket: Bucket,
    pub unit: String,
}

fn res_index(resolution: i64) -> usize {
    RESOLUTIONS
        .iter()
        .position(|r| *r == resolution)
        .unwrap_or(1)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Length-prefixed records of `bytes`, and where the last whole one ends.
fn records(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut r = Reader::new(bytes);
    let mut out = vec![];
    let mut end = 0;
    while let Some(len) = r.u32() {
        match r.bytes(len as usize) {
            Some(b) => {
                out.push(b);
                end = r.position();
            }
            None => break,
        }
    }
    (out, end)
}

/// Reads a record file, cutting a torn tail left by a crash.
fn read_records(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io(e)),
    };
    let (recs, end) = records(&bytes);
    let out = recs.into_iter().map(<[u8]>::to_vec).collect();
    if end < bytes.len() {
        tracing::warn!(path = %path.display(), cut = bytes.len() - end, "metric store: torn tail cut");
        let f = OpenOptions::new().write(true).open(path).map_err(io)?;
        f.set_len(end as u64).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    Ok(out)
}

fn append_record(file: &mut File, payload: &[u8]) -> Result<()> {
    let mut rec = Vec::with_capacity(payload.len() + 4);
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(payload);
    file.write_all(&rec).map_err(io)
}

fn wal_path(root: &Path, seq: u64) -> PathBuf {
    root.join(format!("wal-{seq:020}"))
}

fn numbered(root: &Path, prefix: &str) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = vec![];
    for e in std::fs::read_dir(root).map_err(io)? {
        let e = e.map_err(io)?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.rsplit('-').next())
            .and_then(|n| n.parse().ok())
        {
            out.push((n, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A block's header: resolution, creation, the last write-ahead log it
/// covers, the blocks it replaces, and the index.
struct Header {
    resolution: i64,
    created: i64,
    covers: u64,
    replaces: Vec<u64>,
    index: HashMap<u32, (u64, u32, i64)>,
    min: i64,
    max: i64,
}

fn read_header(path: &Path) -> Result<Header> {
    let bytes = std::fs::read(path).map_err(io)?;
    let bad = || Error::Io(format!("{} is not a metric block", path.display()));
    let mut r = Reader::new(&bytes);
    if r.bytes(4) != Some(BLOCK_MAGIC.as_slice()) {
        return Err(bad());
    }
    let resolution = r.i64().ok_or_else(bad)?;
    let created = r.i64().ok_or_else(bad)?;
    let covers = r.u64().ok_or_else(bad)?;
    let n_replaces = r.u32().ok_or_else(bad)?;
    let mut replaces = vec![];
    for _ in 0..n_replaces {
        replaces.push(r.u64().ok_or_else(bad)?);
    }
    let (min, max) = (r.i64().ok_or_else(bad)?, r.i64().ok_or_else(bad)?);
    let n = r.u32().ok_or_else(bad)?;
    let mut index = HashMap::with_capacity(n as usize);
    for _ in 0..n {
        let id = r.u32().ok_or_else(bad)?;
        let off = r.u64().ok_or_else(bad)?;
        let len = r.u32().ok_or_else(bad)?;
        let newest = r.i64().ok_or_else(bad)?;
        if off + u64::from(len) > bytes.len() as u64 {
            return Err(bad());
        }
        index.insert(id, (off, len, newest));
    }
    Ok(Header {
        resolution,
        created,
        covers,
        replaces,
        index,
        min,
        max,
    })
}

/// Writes a block of `series` (each sorted by start) and syncs it.
#[allow(clippy::too_many_arguments)]
fn write_block(
    root: &Path,
    seq: u64,
    resolution: i64,
    created: i64,
    covers: u64,
    replaces: &[u64],
    series: &BTreeMap<u32, Vec<(i64, Bucket)>>,
) -> Result<Block> {
    let mut data = vec![];
    let mut entries = vec![];
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    for (id, buckets) in series {
        let start = data.len();
        data.extend_from_slice(&(buckets.len() as u32).to_le_bytes());
        for (ts, b) in buckets {
            data.extend_from_slice(&ts.to_le_bytes());
            b.encode(&mut data);
        }
        let newest = buckets.last().map_or(i64::MIN, |(t, _)| *t);
        min = min.min(buckets.first().map_or(i64::MAX, |(t, _)| *t));
        max = max.max(newest);
        entries.push((*id, start, data.len() - start, newest));
    }
    let header_len =
        4 + 8 + 8 + 8 + 4 + 8 * replaces.len() + 16 + 4 + entries.len() * (4 + 8 + 4 + 8);
    let mut out = Vec::with_capacity(header_len + data.len());
    out.extend_from_slice(BLOCK_MAGIC);
    out.extend_from_slice(&resolution.to_le_bytes());
    out.extend_from_slice(&created.to_le_bytes());
    out.extend_from_slice(&covers.to_le_bytes());
    out.extend_from_slice(&(replaces.len() as u32).to_le_bytes());
    for r in replaces {
        out.extend_from_slice(&r.to_le_bytes());
    }
    out.extend_from_slice(&min.to_le_bytes());
    out.extend_from_slice(&max.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let mut index = HashMap::with_capacity(entries.len());
    for (id, start, len, newest) in &entries {
        let off = (header_len + start) as u64;
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&(*len as u32).to_le_bytes());
        out.extend_from_slice(&newest.to_le_bytes());
        index.insert(*id, (off, *len as u32, *newest));
    }
    debug_assert_eq!(out.len(), header_len);
    out.extend_from_slice(&data);
    let path = root.join(format!("blk-{resolution}-{seq:020}"));
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&out).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    sync_dir(root);
    Ok(Block {
        resolution,
        seq,
        created,
        path,
        min,
        max,
        index,
    })
}

fn encode_datum(id: u32, d: &Datum, out: &mut Vec<u8>) {
    out.extend_from_slice(&id.to_le_bytes());
    out.push(u8::from(d.high_resolution));
    out.extend_from_slice(&d.timestamp.to_le_bytes());
    d.bucket.encode(out);
}

fn add_to_head(
    head: &mut HashMap<u32, Buckets>,
    id: u32,
    ts: i64,
    high: bool,
    b: &Bucket,
) -> usize {
    let buckets = head.entry(id).or_default();
    let mut added = 0;
    for (i, res) in RESOLUTIONS.iter().enumerate() {
        if i == 0 && !high {
            continue;
        }
        let start = ts.div_euclid(*res) * res;
        match buckets[i].get_mut(&start) {
            Some(have) => have.merge(b),
            None => {
                buckets[i].insert(start, b.clone());
                added += 1;
            }
        }
    }
    added
}

impl MetricStore {
    /// Opens (or makes) the store under `root`, reading what is there.
    pub fn open(root: impl Into<PathBuf>) -> Result<MetricStore> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io)?;
        // The catalog.
        let catalog_path = root.join("catalog");
        let mut series = vec![];
        let mut by_key = HashMap::new();
        let mut by_metric: HashMap<(Owner, MetricId), Vec<u32>> = HashMap::new();
        for rec in read_records(&catalog_path)? {
            let r: CatalogRecord = serde_json::from_slice(&rec)
                .map_err(|e| Error::Io(format!("catalog record: {e}")))?;
            if r.id as usize != series.len() {
                return Err(Error::Io(format!(
                    "catalog out of order at series {}",
                    r.id
                )));
            }
            by_key.insert(r.key.clone(), r.id);
            by_metric
                .entry((r.key.owner.clone(), r.key.metric.clone()))
                .or_default()
                .push(r.id);
            series.push(Series {
                key: r.key,
                last: i64::MIN,
            });
        }
        let catalog = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&catalog_path)
            .map_err(io)?;
        // Blocks: those another replaces are what a crash left behind.
        let _ = std::fs::read_dir(&root).map(|d| {
            for e in d.flatten() {
                if e.path().extension().is_some_and(|x| x == "tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        });
        let mut headers = vec![];
        for (seq, path) in numbered(&root, "blk-")? {
            headers.push((seq, path.clone(), read_header(&path)?));
        }
        let replaced: std::collections::HashSet<u64> = headers
            .iter()
            .flat_map(|(_, _, h)| h.replaces.iter().copied())
            .collect();
        let mut covered = 0u64;
        let mut blocks = vec![];
        let mut next_block = 1;
        for (seq, path, h) in headers {
            next_block = next_block.max(seq + 1);
            covered = covered.max(h.covers);
            if replaced.contains(&seq) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            for (id, (_, _, newest)) in &h.index {
                if let Some(s) = series.get_mut(*id as usize) {
                    s.last = s.last.max(*newest);
                }
            }
            blocks.push(Block {
                resolution: h.resolution,
                seq,
                created: h.created,
                path,
                min: h.min,
                max: h.max,
                index: h.index,
            });
        }
        // The write-ahead logs not yet sealed into blocks.
        let mut head: HashMap<u32, Buckets> = HashMap::new();
        let mut head_buckets = 0;
        let mut wal_seq = covered + 1;
        for (seq, path) in numbered(&root, "wal-")? {
            if seq <= covered {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            wal_seq = wal_seq.max(seq);
            for rec in read_records(&path)? {
                let mut r = Reader::new(&rec);
                while !r.done() {
                    let (Some(id), Some(high), Some(ts)) = (r.u32(), r.u8(), r.i64()) else {
                        break;
                    };
                    let Some(b) = Bucket::decode(&mut r) else {
                        break;
                    };
                    if let Some(s) = series.get_mut(id as usize) {
                        s.last = s.last.max(ts);
                        head_buckets += add_to_head(&mut head, id, ts, high != 0, &b);
                    }
                }
            }
        }
        let wal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(wal_path(&root, wal_seq))
            .map_err(io)?;
        sync_dir(&root);
        let head_since = (!head.is_empty()).then(now_secs);
        Ok(MetricStore {
            root,
            inner: RwLock::new(Inner {
                series,
                by_key,
                by_metric,
                catalog,
                head,
                head_buckets,
                head_since,
                wal,
                wal_seq,
                blocks,
                next_block,
            }),
        })
    }

    /// Stores accepted data durably (synced before it returns).
    pub fn put(&self, owner: &Owner, data: &[Datum]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut inner = self.inner.write();
        let inner = &mut *inner;
        let mut ids = Vec::with_capacity(data.len());
        let mut new_series = false;
        for d in data {
            let key = SeriesKey {
                owner: owner.clone(),
                metric: d.metric.clone(),
                unit: d.unit.clone(),
            };
            let id = match inner.by_key.get(&key) {
                Some(id) => *id,
                None => {
                    let id = inner.series.len() as u32;
                    let rec = serde_json::to_vec(&CatalogRecord {
                        id,
                        key: key.clone(),
                    })
                    .map_err(|e| Error::Io(e.to_string()))?;
                    append_record(&mut inner.catalog, &rec)?;
                    new_series = true;
                    inner.by_key.insert(key.clone(), id);
                    inner
                        .by_metric
                        .entry((key.owner.clone(), key.metric.clone()))
                        .or_default()
                        .push(id);
                    inner.series.push(Series {
                        key,
                        last: i64::MIN,
                    });
                    id
                }
            };
            ids.push(id);
        }
        if new_series {
            inner.catalog.sync_data().map_err(io)?;
        }
        let mut payload = Vec::with_capacity(data.len() * 64);
        for (id, d) in ids.iter().zip(data) {
            encode_datum(*id, d, &mut payload);
        }
        append_record(&mut inner.wal, &payload)?;
        inner.wal.sync_data().map_err(io)?;
        for (id, d) in ids.iter().zip(data) {
            let s = &mut inner.series[*id as usize];
            s.last = s.last.max(d.timestamp);
            inner.head_buckets += add_to_head(
                &mut inner.head,
                *id,
                d.timestamp,
                d.high_resolution,
                &d.bucket,
            );
        }
        inner.head_since.get_or_insert_with(now_secs);
        Ok(())
    }

    /// The metrics of `owner` matching the filters, each once, sorted:
    /// `dimensions` are (name, value or any) that a metric must all have;
    /// `active_since` (epoch seconds) keeps those with data since.
    pub fn list(
        &self,
        owner: &Owner,
        namespace: Option<&str>,
        name: Option<&str>,
        dimensions: &[(String, Option<String>)],
        active_since: Option<i64>,
    ) -> Vec<MetricId> {
        let inner = self.inner.read();
        let mut out: Vec<MetricId> = inner
            .series
            .iter()
            .filter(|s| s.key.owner == *owner)
            .filter(|s| namespace.is_none_or(|n| s.key.metric.namespace == n))
            .filter(|s| name.is_none_or(|n| s.key.metric.name == n))
            .filter(|s| active_since.is_none_or(|t| s.last >= t))
            .filter(|s| {
                dimensions.iter().all(|(k, v)| {
                    s.key
                        .metric
                        .dimensions
                        .iter()
                        .any(|(dk, dv)| dk == k && v.as_ref().is_none_or(|v| v == dv))
                })
            })
            .map(|s| s.key.metric.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The resolution a read of `period` seconds from `start` (epoch
    /// seconds) uses at `now`: per second for periods under a minute (only
    /// high-resolution data has them), else the finest that still holds
    /// data that old and divides the period.
    pub fn resolution_for(period: i64, start: i64, now: i64) -> i64 {
        if period < 60 {
            return 1;
        }
        RESOLUTIONS[1..]
            .iter()
            .copied()
            .find(|r| period % r == 0 && start >= now - retention(*r))
            .unwrap_or(3600)
    }

    /// The metric's data in the window, merged into its periods; only
    /// `unit`'s data when given.
    pub fn points(
        &self,
        owner: &Owner,
        metric: &MetricId,
        unit: Option<&str>,
        window: Window,
    ) -> Result<Vec<Point>> {
        let Window {
            start,
            end,
            period,
            resolution,
        } = window;
        let inner = self.inner.read();
        let ids: Vec<u32> = inner
            .by_metric
            .get(&(owner.clone(), metric.clone()))
            .into_iter()
            .flatten()
            .copied()
            .filter(|id| unit.is_none_or(|u| inner.series[*id as usize].key.unit == u))
            .collect();
        let ri = res_index(resolution);
        let period = period.max(resolution);
        let mut merged: BTreeMap<i64, (Bucket, Option<String>)> = BTreeMap::new();
        let mut add = |ts: i64, b: &Bucket, unit: &str| {
            if ts < start || ts >= end {
                return;
            }
            let at = start + (ts - start).div_euclid(period) * period;
            match merged.get_mut(&at) {
                Some((have, u)) => {
                    have.merge(b);
                    if u.as_deref() != Some(unit) {
                        *u = None;
                    }
                }
                None => {
                    merged.insert(at, (b.clone(), Some(unit.to_string())));
                }
            }
        };
        for id in &ids {
            let unit = &inner.series[*id as usize].key.unit;
            if let Some(buckets) = inner.head.get(id) {
                for (ts, b) in buckets[ri].range(start - resolution..end) {
                    add(*ts, b, unit);
                }
            }
            for blk in inner.blocks.iter().filter(|b| {
                b.resolution == resolution && b.max >= start - resolution && b.min < end
            }) {
                let Some((off, len, _)) = blk.index.get(id) else {
                    continue;
                };
                let f = File::open(&blk.path).map_err(io)?;
                let mut buf = vec![0u8; *len as usize];
                f.read_exact_at(&mut buf, *off).map_err(io)?;
                let mut r = Reader::new(&buf);
                let n = r.u32().unwrap_or(0);
                for _ in 0..n {
                    let (Some(ts), Some(b)) = (r.i64(), Bucket::decode(&mut r)) else {
                        return Err(Error::Io(format!("{} is damaged", blk.path.display())));
                    };
                    add(ts, &b, unit);
                }
            }
        }
        Ok(merged
            .into_iter()
            .map(|(timestamp, (bucket, unit))| Point {
                timestamp,
                bucket,
                unit: unit.unwrap_or_else(|| "None".into()),
            })
            .collect())
    }

    /// Seals what memory holds into blocks when it is old or large enough
    /// (always when `force`), drops blocks past their retention, and
    /// merges the blocks of each finished day. `now` is epoch seconds.
    pub fn maintain(&self, now: i64, force: bool) -> Result<()> {
        let mut inner = self.inner.write();
        let due = inner
            .head_since
            .is_some_and(|t| now - t >= SEAL_SECS || inner.head_buckets >= SEAL_BUCKETS);
        if (force && !inner.head.is_empty()) || due {
            self.seal(&mut inner, now)?;
        }
        let mut kept = vec![];
        for b in std::mem::take(&mut inner.blocks) {
            if b.max < now - retention(b.resolution) {
                let _ = std::fs::remove_file(&b.path);
            } else {
                kept.push(b);
            }
        }
        inner.blocks = kept;
        self.compact(&mut inner, now)
    }

    fn seal(&self, inner: &mut Inner, now: i64) -> Result<()> {
        // New writes go to a new log; everything up to the old one is in
        // the blocks written now.
        let covers = inner.wal_seq;
        inner.wal_seq += 1;
        inner.wal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(wal_path(&self.root, inner.wal_seq))
            .map_err(io)?;
        let head = std::mem::take(&mut inner.head);
        inner.head_buckets = 0;
        inner.head_since = None;
        for (ri, res) in RESOLUTIONS.iter().enumerate() {
            let cutoff = now - retention(*res);
            let series: BTreeMap<u32, Vec<(i64, Bucket)>> = head
                .iter()
                .filter_map(|(id, b)| {
                    let kept: Vec<(i64, Bucket)> = b[ri]
                        .range(cutoff..)
                        .map(|(t, b)| (*t, b.clone()))
                        .collect();
                    (!kept.is_empty()).then_some((*id, kept))
                })
                .collect();
            if series.is_empty() {
                continue;
            }
            let seq = inner.next_block;
            inner.next_block += 1;
            let block = write_block(&self.root, seq, *res, now, covers, &[], &series)?;
            inner.blocks.push(block);
        }
        for (seq, path) in numbered(&self.root, "wal-")? {
            if seq <= covers {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// Merges the blocks of each resolution written on the same finished
    /// day into one.
    fn compact(&self, inner: &mut Inner, now: i64) -> Result<()> {
        let today = now.div_euclid(86_400);
        let mut groups: BTreeMap<(i64, i64), Vec<usize>> = BTreeMap::new();
        for (i, b) in inner.blocks.iter().enumerate() {
            let day = b.created.div_euclid(86_400);
            if day < today {
                groups.entry((b.resolution, day)).or_default().push(i);
            }
        }
        let mut gone = std::collections::HashSet::new();
        let mut made = vec![];
        for ((res, day), members) in groups.into_iter().filter(|(_, m)| m.len() > 1) {
            let mut series: BTreeMap<u32, BTreeMap<i64, Bucket>> = BTreeMap::new();
            let mut covers = 0;
            let mut replaces = vec![];
            for i in &members {
                let b = &inner.blocks[*i];
                let bytes = std::fs::read(&b.path).map_err(io)?;
                for (id, (off, len, _)) in &b.index {
                    let Some(slice) = bytes.get(*off as usize..(*off as usize + *len as usize))
                    else {
                        continue;
                    };
                    let mut r = Reader::new(slice);
                    let n = r.u32().unwrap_or(0);
                    let into = series.entry(*id).or_default();
                    for _ in 0..n {
                        let (Some(ts), Some(bk)) = (r.i64(), Bucket::decode(&mut r)) else {
                            break;
                        };
                        match into.get_mut(&ts) {
                            Some(have) => have.merge(&bk),
                            None => {
                                into.insert(ts, bk);
                            }
                        }
                    }
                }
                replaces.push(b.seq);
                covers = covers.max(read_header(&b.path)?.covers);
                gone.insert(*i);
            }
            let series: BTreeMap<u32, Vec<(i64, Bucket)>> = series
                .into_iter()
                .map(|(id, b)| (id, b.into_iter().collect()))
                .collect();
            let seq = inner.next_block;
            inner.next_block += 1;
            made.push(write_block(
                &self.root,
                seq,
                res,
                day * 86_400,
                covers,
                &replaces,
                &series,
            )?);
        }
        if gone.is_empty() {
            return Ok(());
        }
        let mut kept = vec![];
        for (i, b) in std::mem::take(&mut inner.blocks).into_iter().enumerate() {
            if gone.contains(&i) {
                let _ = std::fs::remove_file(&b.path);
            } else {
                kept.push(b);
            }
        }
        kept.extend(made);
        inner.blocks = kept;
        Ok(())
    }

    /// How many series and blocks there are, and how many buckets memory
    /// holds (for the server's own metrics and tests).
    pub fn stats(&self) -> (usize, usize, usize) {
        let inner = self.inner.read();
        (inner.series.len(), inner.blocks.len(), inner.head_buckets)
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            account: "000000000000".into(),
            region: "us-east-1".into(),
        }
    }

    fn cpu(service: &str) -> MetricId {
        MetricId::new(
            "AWS/ECS",
            "CPUUtilization",
            vec![
                ("ServiceName".into(), service.into()),
                ("ClusterName".into(), "c".into()),
            ],
        )
    }

    fn datum(metric: MetricId, ts: i64, v: f64, high: bool) -> Datum {
        Datum {
            metric,
            unit: "Percent".into(),
            timestamp: ts,
            high_resolution: high,
            bucket: Bucket::value(v),
        }
    }

    /// On the hour.
    const T0: i64 = 1_800_000_000;

    #[test]
    fn datapoints_aggregate_per_period_and_survive_sealing_and_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetricStore::open(dir.path()).expect("open");
        let data: Vec<Datum> = (0..120)
            .map(|i| datum(cpu("web"), T0 + i * 10, (i % 6) as f64 * 10.0, i % 2 == 0))
            .collect();
        store.put(&owner(), &data).expect("put");
        store
            .put(&owner(), &[datum(cpu("api"), T0, 99.0, false)])
            .expect("put");
        let read = |s: &MetricStore, period: i64, res: i64| {
            s.points(
                &owner(),
                &cpu("web"),
                None,
                Window {
                    start: T0,
                    end: T0 + 1200,
                    period,
                    resolution: res,
                },
            )
            .expect("points")
        };
        let minutes = read(&store, 60, 60);
        assert_eq!(minutes.len(), 20);
        assert_eq!(minutes[0].timestamp, T0);
        assert_eq!(minutes[0].bucket.count, 6.0);
        assert_eq!(minutes[0].bucket.sum, 150.0);
        assert_eq!((minutes[0].bucket.min, minutes[0].bucket.max), (0.0, 50.0));
        assert_eq!(minutes[0].unit, "Percent");
        let five = read(&store, 300, 300);
        assert_eq!(five.len(), 4);
        assert_eq!(five[0].bucket.count, 30.0);
        // High-resolution data: every other datapoint, per second.
        let seconds = read(&store, 10, 1);
        assert_eq!(seconds.len(), 60);
        let before = (minutes.clone(), five.clone(), seconds.clone());
        // Reopened from the write-ahead log alone, then from blocks.
        drop(store);
        let store = MetricStore::open(dir.path()).expect("reopen");
        assert_eq!(
            (
                read(&store, 60, 60),
                read(&store, 300, 300),
                read(&store, 10, 1)
            ),
            before
        );
        store.maintain(T0 + 1300, true).expect("seal");
        assert_eq!(store.stats().2, 0);
        assert_eq!(
            (
                read(&store, 60, 60),
                read(&store, 300, 300),
                read(&store, 10, 1)
            ),
            before
        );
        // Late data merges with the sealed buckets.
        store
            .put(&owner(), &[datum(cpu("web"), T0 + 5, 100.0, false)])
            .expect("late");
        let late = read(&store, 60, 60);
        assert_eq!(late[0].bucket.count, 7.0);
        assert_eq!(late[0].bucket.max, 100.0);
        drop(store);
        let store = MetricStore::open(dir.path()).expect("reopen");
        assert_eq!(read(&store, 60, 60), late);
        let listed = store.list(
            &owner(),
            Some("AWS/ECS"),
            None,
            &[("ServiceName".into(), Some("api".into()))],
            None,
        );
        assert_eq!(listed, vec![cpu("api")]);
        assert_eq!(store.list(&owner(), None, None, &[], None).len(), 2);
        assert!(store
            .list(&owner(), None, None, &[], Some(T0 + 100_000))
            .is_empty());
    }

    #[test]
    fn a_crash_between_sealing_and_removing_the_log_counts_nothing_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetricStore::open(dir.path()).expect("open");
        store
            .put(&owner(), &[datum(cpu("web"), T0, 10.0, false)])
            .expect("put");
        let wal = std::fs::read(wal_path(dir.path(), 1)).expect("wal");
        store.maintain(T0 + 10, true).expect("seal");
        // The log the block covers comes back, as if never removed.
        std::fs::write(wal_path(dir.path(), 1), wal).expect("restore");
        drop(store);
        let store = MetricStore::open(dir.path()).expect("reopen");
        let p = store
            .points(
                &owner(),
                &cpu("web"),
                None,
                Window {
                    start: T0,
                    end: T0 + 60,
                    period: 60,
                    resolution: 60,
                },
            )
            .expect("points");
        assert_eq!(p[0].bucket.count, 1.0);
    }

    #[test]
    fn a_torn_log_tail_is_cut_and_what_came_before_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetricStore::open(dir.path()).expect("open");
        store
            .put(&owner(), &[datum(cpu("web"), T0, 10.0, false)])
            .expect("put");
        drop(store);
        let mut f = OpenOptions::new()
            .append(true)
            .open(wal_path(dir.path(), 1))
            .expect("wal");
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).expect("torn");
        let store = MetricStore::open(dir.path()).expect("reopen");
        store
            .put(&owner(), &[datum(cpu("web"), T0 + 1, 20.0, false)])
            .expect("put");
        drop(store);
        let store = MetricStore::open(dir.path()).expect("reopen");
        let p = store
            .points(
                &owner(),
                &cpu("web"),
                None,
                Window {
                    start: T0,
                    end: T0 + 60,
                    period: 60,
                    resolution: 60,
                },
            )
            .expect("points");
        assert_eq!((p[0].bucket.count, p[0].bucket.sum), (2.0, 30.0));
    }

    #[test]
    fn blocks_expire_by_resolution_and_merge_per_day() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetricStore::open(dir.path()).expect("open");
        for i in 0..3 {
            store
                .put(&owner(), &[datum(cpu("web"), T0 + i * 60, 1.0, true)])
                .expect("put");
            store.maintain(T0 + i * 60 + 1, true).expect("seal");
        }
        // Four resolutions, three seals.
        assert_eq!(store.stats().1, 12);
        // A day later: the per-second blocks are gone, the rest merged.
        store.maintain(T0 + 86_400 + 10, false).expect("maintain");
        assert_eq!(store.stats().1, 3);
        let p = store
            .points(
                &owner(),
                &cpu("web"),
                None,
                Window {
                    start: T0,
                    end: T0 + 3600,
                    period: 3600,
                    resolution: 3600,
                },
            )
            .expect("points");
        assert_eq!(p[0].bucket.count, 3.0);
        drop(store);
        let store = MetricStore::open(dir.path()).expect("reopen");
        assert_eq!(store.stats().1, 3);
        assert_eq!(
            store
                .points(
                    &owner(),
                    &cpu("web"),
                    None,
                    Window {
                        start: T0,
                        end: T0 + 180,
                        period: 60,
                        resolution: 60
                    }
                )
                .expect("points")
                .len(),
            3
        );
    }

    #[test]
    fn statistic_sets_keep_percentiles_only_when_their_values_are_known() {
        let mut b = Bucket::set(4.0, 40.0, 10.0, 10.0);
        assert!(b.sketch.is_some());
        b.merge(&Bucket::value(20.0));
        assert!(b.sketch.is_some());
        b.merge(&Bucket::set(2.0, 3.0, 1.0, 2.0));
        assert!(b.sketch.is_none());
        assert_eq!((b.count, b.sum, b.min, b.max), (7.0, 63.0, 1.0, 20.0));
    }

    #[test]
    fn reads_pick_the_finest_resolution_that_still_holds_the_data() {
        let now = T0;
        assert_eq!(MetricStore::resolution_for(10, now - 60, now), 1);
        assert_eq!(MetricStore::resolution_for(60, now - 60, now), 60);
        assert_eq!(MetricStore::resolution_for(60, now - 4 * 3600, now), 60);
        assert_eq!(
            MetricStore::resolution_for(300, now - 20 * 86_400, now),
            300
        );
        assert_eq!(
            MetricStore::resolution_for(3600, now - 100 * 86_400, now),
            3600
        );
    }
}
