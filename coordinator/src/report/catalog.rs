//! The catalog: every stored verdict of one tool, which the pages are rendered from.
//!
//! Loading 200,000 verdicts one object at a time is slow on S3, so the report keeps a snapshot
//! of the catalog in the store (`{tool}/results.jsonl`, which scripts read too). A load lists
//! the verdicts (cheap: a thousand keys a request) and reads only those the snapshot does not
//! have or that were written after it; deleted verdicts drop out with the listing. `report
//! --full` ignores the snapshot.

use super::source::{self, ListedResult};
use crate::results::record::ResultRecord;
use crate::results::store::Store;
use anyhow::Result;
use crater_proto::tool::Tool;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

/// The snapshot's key, relative to the tool's folder.
pub const SNAPSHOT: &str = "results.jsonl";
/// A verdict written this close before the snapshot may have been missed by it (clocks of the
/// writer and the store differ a little): it is read again.
const SNAPSHOT_SLACK: Duration = Duration::from_secs(60);

/// Every verdict of a tool, by crate and version.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub tool: Tool,
    records: BTreeMap<(String, String), ResultRecord>,
}

impl Catalog {
    pub fn new(tool: Tool) -> Catalog {
        Catalog {
            tool,
            records: BTreeMap::new(),
        }
    }

    /// Adds or replaces a crate version's verdict.
    pub fn insert(&mut self, record: ResultRecord) {
        self.records
            .insert((record.name.clone(), record.version.clone()), record);
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every verdict, by crate name then version (as text).
    pub fn all(&self) -> impl Iterator<Item = &ResultRecord> {
        self.records.values()
    }

    /// The newest version's verdict of each crate (by semver; versions that do not parse sort
    /// below those that do), by crate name. This is what the pages show.
    pub fn newest(&self) -> Vec<&ResultRecord> {
        let mut newest: Vec<&ResultRecord> = Vec::new();
        for record in self.records.values() {
            match newest.last_mut() {
                Some(last) if last.name == record.name => {
                    if version_key(&record.version) > version_key(&last.version) {
                        *last = record;
                    }
                }
                _ => newest.push(record),
            }
        }
        newest
    }

    /// The snapshot: one compact JSON verdict a line, by crate and version.
    pub fn to_jsonl(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.records.len() * 512);
        for record in self.records.values() {
            serde_json::to_writer(&mut out, record).expect("a record serializes");
            out.push(b'\n');
        }
        out
    }
}

fn version_key(version: &str) -> Option<semver::Version> {
    semver::Version::parse(version).ok()
}

/// How a load went, for the person running `report`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Loaded {
    pub listed: usize,
    pub from_snapshot: usize,
    pub read: usize,
}

/// Loads `tool`'s verdicts from the store: from its snapshot where it is current (unless
/// `full`), reading the rest one by one.
pub async fn load(store: &Store, tool: Tool, full: bool) -> Result<(Catalog, Loaded)> {
    let listed = source::list_results(store, tool).await?;
    let snapshot = if full {
        None
    } else {
        read_snapshot(store, tool).await
    };
    let mut catalog = Catalog::new(tool);
    let mut to_read = Vec::new();
    let (mut snapshot_records, snapshot_time) = snapshot.unwrap_or_default();
    let mut loaded = Loaded {
        listed: listed.len(),
        ..Loaded::default()
    };
    for ListedResult {
        name,
        version,
        modified,
    } in listed
    {
        let key = (name, version);
        let current = match (modified, snapshot_time) {
            (Some(modified), Some(snapshot)) => modified + SNAPSHOT_SLACK < snapshot,
            _ => false,
        };
        match snapshot_records.remove(&key) {
            Some(record) if current => {
                loaded.from_snapshot += 1;
                catalog.insert(record);
            }
            _ => to_read.push(key),
        }
    }
    loaded.read = to_read.len();
    for record in source::read_results(store, tool, to_read).await? {
        catalog.insert(record);
    }
    Ok((catalog, loaded))
}

type Snapshot = (HashMap<(String, String), ResultRecord>, Option<SystemTime>);

/// The snapshot's verdicts and when it was written; `None` (read everything) when it is
/// missing or unreadable. A line that does not parse is skipped: its crate is read instead.
async fn read_snapshot(store: &Store, tool: Tool) -> Option<Snapshot> {
    let key = format!("{tool}/{SNAPSHOT}");
    let (bytes, modified) = match source::read(store, &key).await {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!("reading every verdict one by one: {e:#}");
            return None;
        }
    };
    let records = bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<ResultRecord>(line).ok())
        .map(|r| ((r.name.clone(), r.version.clone()), r))
        .collect();
    Some((records, modified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::record::sample_record;

    #[test]
    fn the_newest_version_of_each_crate_by_semver() {
        let mut catalog = Catalog::new(Tool::Check);
        for (name, version) in [
            ("a", "0.9.0"),
            ("a", "0.10.0"),
            ("a", "0.10.0-rc.1"),
            ("b", "1.0.0"),
            ("c", "not-semver"),
        ] {
            catalog.insert(sample_record(name, version));
        }
        let newest: Vec<(&str, &str)> = catalog
            .newest()
            .iter()
            .map(|r| (r.name.as_str(), r.version.as_str()))
            .collect();
        assert_eq!(
            newest,
            [("a", "0.10.0"), ("b", "1.0.0"), ("c", "not-semver")],
            "0.10.0 is newer than 0.9.0 (text order says otherwise) and than its rc"
        );
        assert_eq!(catalog.len(), 5);
    }

    #[test]
    fn the_snapshot_has_one_parseable_line_a_verdict() {
        let mut catalog = Catalog::new(Tool::Check);
        catalog.insert(sample_record("a", "1.0.0"));
        catalog.insert(sample_record("b\n\"</script>", "1.0.0"));
        let jsonl = catalog.to_jsonl();
        let lines: Vec<ResultRecord> = jsonl
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].name, "b\n\"</script>");
    }
}
