//! Writes dumps in crates.io's real format, for tests and benchmarks, since the real dump cannot
//! be fetched on the project's machines.
//!
//! The layout is the one crates.io publishes (and `db_dump` reads): a gzip'd tar with one top
//! directory named after the dump's time, `YYYY-MM-DD-HHMMSS/`, holding `README.md`,
//! `metadata.json` and `data/<table>.csv`. Only three tables are written, in the order crates.io
//! writes them (tables before the tables that refer to them): `crates.csv`, `versions.csv`,
//! `version_downloads.csv`. Each has every column of the real export, in its order (the column
//! names sorted), with values as Postgres' `COPY ... WITH CSV HEADER` prints them:
//!
//! - NULL is an empty field; an empty string is `""`; a field with `,`, `"` or a line break is
//!   quoted, with `"` doubled;
//! - booleans are `t` / `f`;
//! - timestamps are `YYYY-MM-DD HH:MM:SS.ffffff`, UTC without a zone, trailing zeros of the
//!   fraction dropped (and the fraction itself when it is zero); dates are `YYYY-MM-DD`;
//! - `bytea` (the checksums) is `\x` and lowercase hex;
//! - `jsonb` (`features`) is Postgres' text form: `{"std": [], "default": ["std"]}`;
//! - `text[]` (`keywords`, `categories`, `bin_names`) is `{a,b}` (`{}` when empty).
//!
//! Everything not given by [`SynthCrate`] (descriptions, timestamps, features, ...) is filled in
//! deterministically from the crate's and the version's position, so the same input always gives
//! the same bytes.

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::borrow::Borrow;
use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

/// One crate of a synthetic dump; its id in the dump is its position + 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthCrate {
    pub name: String,
    pub versions: Vec<SynthVersion>,
}

/// One version of a [`SynthCrate`]; version ids are given in order across the whole dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthVersion {
    /// The version number as published, e.g. `1.2.0-rc.1`.
    pub num: String,
    pub yanked: bool,
    /// (date "YYYY-MM-DD", downloads) rows for version_downloads
    pub downloads: Vec<(String, u64)>,
    /// SHA-256 of the .crate file (`versions.tar_sha256`).
    pub checksum: [u8; 32],
}

/// The dump's time when no version has a download row.
const DEFAULT_DUMP_DATE: &str = "2025-01-01";
/// When crates.io's daily dump job runs (UTC): the time part of the top directory.
const DUMP_TIME: (u8, u8, u8) = (2, 0, 27);
/// Versions are published between these two times (Unix seconds): crates.io's 1.0 launch, and
/// the end of 2024.
const FIRST_PUBLISH: i64 = 1_431_648_000;
const LAST_PUBLISH: i64 = 1_735_603_200;

const CRATES_HEADER: &str = "created_at,description,documentation,homepage,id,max_features,\
max_upload_size,name,readme,repository,trustpub_only,updated_at";
const VERSIONS_HEADER: &str = "bin_names,categories,crate_id,crate_size,created_at,description,\
documentation,downloads,edition,features,has_lib,homepage,id,keywords,license,links,num,\
num_no_build,published_by,repository,rust_version,tar_sha256,updated_at,yanked,zip_json_sha256,\
zip_sha256";
const VERSION_DOWNLOADS_HEADER: &str = "date,downloads,version_id";

/// Writes a .tar.gz in the dump's real layout with crates.csv, versions.csv,
/// version_downloads.csv (and whatever else db-dump requires to load those), every column the
/// real dump has, values in the real formats.
pub fn write_dump(path: &Path, crates: &[SynthCrate]) -> Result<()> {
    write_dump_iter(path, crates)
}

/// [`write_dump`] for crates made one at a time (a full-size dump without holding it in memory):
/// each crate is written out and dropped before the next is asked for.
pub fn write_dump_iter<C: Borrow<SynthCrate>>(
    path: &Path,
    crates: impl IntoIterator<Item = C>,
) -> Result<()> {
    let result = write(path, crates);
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result.with_context(|| format!("writing the synthetic dump {}", path.display()))
}

fn write<C: Borrow<SynthCrate>>(path: &Path, crates: impl IntoIterator<Item = C>) -> Result<()> {
    let mut tables = Tables::create(path)?;
    let mut version_id = 0u32;
    let mut latest_date: Option<String> = None;
    for (index, krate) in crates.into_iter().enumerate() {
        let krate = krate.borrow();
        let crate_id = u32::try_from(index + 1).context("too many crates")?;
        tables.crate_row(crate_id, krate)?;
        let count = krate.versions.len();
        for (position, version) in krate.versions.iter().enumerate() {
            version_id = version_id.checked_add(1).context("too many versions")?;
            let fill = VersionFill::new(crate_id, krate, position, count);
            tables.version_row(version_id, crate_id, krate, version, &fill)?;
            for (date, downloads) in &version.downloads {
                check_date(date).with_context(|| {
                    format!("{} {}: download date `{date}`", krate.name, version.num)
                })?;
                tables.download_row(version_id, date, *downloads)?;
                if latest_date
                    .as_deref()
                    .is_none_or(|latest| date.as_str() > latest)
                {
                    latest_date = Some(date.clone());
                }
            }
        }
    }
    // crates.io dumps the day's data a couple of hours after midnight: the day after the newest
    // download row.
    let day = match &latest_date {
        Some(date) => next_day(date)?,
        None => DEFAULT_DUMP_DATE.to_owned(),
    };
    tables.into_tarball(path, &day)
}

/// The three CSV files, written to temporary files beside the output (a tar entry needs its size
/// before its bytes).
struct Tables {
    crates: TempCsv,
    versions: TempCsv,
    version_downloads: TempCsv,
}

impl Tables {
    fn create(out: &Path) -> Result<Self> {
        Ok(Tables {
            crates: TempCsv::create(out, "crates", CRATES_HEADER)?,
            versions: TempCsv::create(out, "versions", VERSIONS_HEADER)?,
            version_downloads: TempCsv::create(out, "version_downloads", VERSION_DOWNLOADS_HEADER)?,
        })
    }

    fn crate_row(&mut self, id: u32, krate: &SynthCrate) -> io::Result<()> {
        let h = mix(u64::from(id));
        let count = krate.versions.len();
        let (first, last) = if count == 0 {
            let t = publish_time(id, 0, 1);
            (t, t)
        } else {
            (
                publish_time(id, 0, count),
                publish_time(id, count - 1, count),
            )
        };
        let w = &mut self.crates.out;
        timestamp(w, first)?; // created_at
        w.write_all(b",")?;
        text(w, &description(&krate.name, h))?;
        w.write_all(b",")?;
        if !h.is_multiple_of(4) {
            write!(w, "https://docs.rs/{}", krate.name)?; // documentation
        }
        w.write_all(b",")?;
        if h.is_multiple_of(3) {
            write!(w, "https://{}.example.org", krate.name)?; // homepage
        }
        write!(w, ",{id},")?;
        if h.is_multiple_of(97) {
            write!(w, "{}", 300 + h % 200)?; // max_features
        }
        w.write_all(b",")?;
        if h.is_multiple_of(89) {
            write!(w, "{}", 20_971_520 * (1 + h % 4))?; // max_upload_size
        }
        w.write_all(b",")?;
        text(w, &krate.name)?;
        w.write_all(b",")?;
        if !h.is_multiple_of(5) {
            text(w, &readme(&krate.name, h))?;
        }
        w.write_all(b",")?;
        if !h.is_multiple_of(7) {
            write!(w, "https://github.com/example-{}/{}", h % 5000, krate.name)?; // repository
        }
        w.write_all(if h.is_multiple_of(199) {
            b",t,"
        } else {
            b",f,"
        })?; // trustpub_only
        timestamp(w, last + (h % 86_400) as i64)?; // updated_at
        w.write_all(b"\n")
    }

    fn version_row(
        &mut self,
        id: u32,
        crate_id: u32,
        krate: &SynthCrate,
        version: &SynthVersion,
        fill: &VersionFill,
    ) -> io::Result<()> {
        let h = fill.hash;
        let modern = fill.created >= 1_546_300_800; // 2019: newer columns are filled in
        let w = &mut self.versions.out;
        // bin_names: NULL before cargo told crates.io about binaries
        if modern {
            if h.is_multiple_of(9) {
                write!(w, "{{{}}}", krate.name)?;
            } else {
                w.write_all(b"{}")?;
            }
        }
        w.write_all(b",")?;
        let categories = CATEGORIES[(h % CATEGORIES.len() as u64) as usize];
        text(w, categories)?;
        write!(w, ",{crate_id},")?;
        if modern || h.is_multiple_of(2) {
            write!(w, "{}", 2_000 + h % 400_000)?; // crate_size
        }
        w.write_all(b",")?;
        timestamp(w, fill.created)?;
        w.write_all(b",")?;
        if !h.is_multiple_of(11) {
            text(w, &description(&krate.name, mix(u64::from(crate_id))))?;
        }
        w.write_all(b",")?;
        if !h.is_multiple_of(4) {
            write!(w, "https://docs.rs/{}", krate.name)?; // documentation
        }
        let recent: u64 = version.downloads.iter().map(|(_, n)| n).sum();
        write!(w, ",{},", recent * (2 + h % 5) + h % 1000)?; // downloads (all time)
        if modern {
            w.write_all(EDITIONS[(h % EDITIONS.len() as u64) as usize].as_bytes())?;
        }
        w.write_all(b",")?;
        text(w, FEATURES[(h / 7 % FEATURES.len() as u64) as usize])?;
        w.write_all(b",")?;
        if modern {
            w.write_all(if h.is_multiple_of(9) && h.is_multiple_of(2) {
                b"f"
            } else {
                b"t"
            })?; // has_lib
        }
        w.write_all(b",")?;
        if h.is_multiple_of(3) {
            write!(w, "https://{}.example.org", krate.name)?; // homepage
        }
        write!(w, ",{id},")?;
        text(w, KEYWORDS[(h / 3 % KEYWORDS.len() as u64) as usize])?;
        w.write_all(b",")?;
        text(w, LICENSES[(h / 5 % LICENSES.len() as u64) as usize])?;
        w.write_all(b",")?;
        if h.is_multiple_of(151) {
            text(w, &krate.name)?; // links
        }
        w.write_all(b",")?;
        text(w, &version.num)?;
        w.write_all(b",")?;
        text(w, version.num.split('+').next().unwrap_or_default())?; // num_no_build
        w.write_all(b",")?;
        if modern {
            write!(w, "{}", 1 + mix(u64::from(crate_id) ^ 0x5eed) % 90_000)?; // published_by
        }
        w.write_all(b",")?;
        if !h.is_multiple_of(7) {
            write!(w, "https://github.com/example/{}", krate.name)?; // repository
        }
        w.write_all(b",")?;
        if modern && h.is_multiple_of(3) {
            write!(w, "1.{}", 56 + h % 30)?; // rust_version
        }
        w.write_all(b",")?;
        sha256(w, &version.checksum)?; // tar_sha256
        w.write_all(b",")?;
        timestamp(w, fill.updated(version.yanked))?;
        w.write_all(if version.yanked { b",t," } else { b",f," })?;
        if fill.zipped {
            let mut zip = version.checksum;
            zip.reverse();
            sha256(w, &zip)?; // zip_json_sha256
            w.write_all(b",")?;
            zip.iter_mut().for_each(|b| *b ^= 0x5a);
            sha256(w, &zip)?; // zip_sha256
        } else {
            w.write_all(b",")?;
        }
        w.write_all(b"\n")
    }

    fn download_row(&mut self, version_id: u32, date: &str, downloads: u64) -> io::Result<()> {
        writeln!(
            self.version_downloads.out,
            "{date},{downloads},{version_id}"
        )
    }

    fn into_tarball(self, path: &Path, day: &str) -> Result<()> {
        let stamp = format!(
            "{day}-{:02}{:02}{:02}",
            DUMP_TIME.0, DUMP_TIME.1, DUMP_TIME.2
        );
        let mtime = unix_seconds(day)? + i64::from(DUMP_TIME.0) * 3600;
        let mtime = u64::try_from(mtime + i64::from(DUMP_TIME.1) * 60 + i64::from(DUMP_TIME.2))?;
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let gz = GzEncoder::new(
            BufWriter::with_capacity(1 << 20, file),
            Compression::default(),
        );
        let mut tar = tar::Builder::new(gz);
        append_dir(&mut tar, &format!("{stamp}/"), mtime)?;
        let readme = "# crates.io Database Dump (synthetic)\n\nWritten by crater-at-home's \
             `dump::synth` in the layout and formats of crates.io's daily dump, for tests and \
             benchmarks. Only `crates`, `versions` and `version_downloads` are included.\n"
            .to_string();
        append_bytes(
            &mut tar,
            &format!("{stamp}/README.md"),
            readme.as_bytes(),
            mtime,
        )?;
        let metadata = format!(
            "{{\n  \"timestamp\": \"{day}T{:02}:{:02}:{:02}.000000Z\",\n  \
             \"crates_io_commit\": \"synthetic\"\n}}",
            DUMP_TIME.0, DUMP_TIME.1, DUMP_TIME.2
        );
        append_bytes(
            &mut tar,
            &format!("{stamp}/metadata.json"),
            metadata.as_bytes(),
            mtime,
        )?;
        append_dir(&mut tar, &format!("{stamp}/data/"), mtime)?;
        for csv in [self.crates, self.versions, self.version_downloads] {
            let name = format!("{stamp}/data/{}.csv", csv.table);
            let (mut file, len) = csv.finish()?;
            let mut header = file_header(len, mtime);
            tar.append_data(&mut header, &name, &mut file)
                .with_context(|| format!("appending {name}"))?;
        }
        let gz = tar.into_inner()?;
        let mut out = gz.finish()?;
        out.flush()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    }
}

/// A CSV table being written to a temporary file, removed when dropped.
struct TempCsv {
    table: &'static str,
    path: PathBuf,
    out: BufWriter<File>,
}

impl TempCsv {
    fn create(out: &Path, table: &'static str, header: &str) -> Result<Self> {
        let file_name = out.file_name().unwrap_or_default().to_string_lossy();
        let path = out.with_file_name(format!(".{file_name}.{table}.csv.tmp"));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let mut csv = TempCsv {
            table,
            path,
            out: BufWriter::with_capacity(1 << 20, file),
        };
        writeln!(csv.out, "{header}")?;
        Ok(csv)
    }

    /// The written file, rewound, and its length.
    fn finish(mut self) -> Result<(File, u64)> {
        self.out.flush()?;
        let mut file = self.out.get_ref().try_clone()?;
        let len = file.seek(io::SeekFrom::End(0))?;
        file.rewind()?;
        Ok((file, len))
    }
}

impl Drop for TempCsv {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a version's row gets beyond [`SynthVersion`], derived from its position.
struct VersionFill {
    hash: u64,
    created: i64,
    zipped: bool,
}

impl VersionFill {
    fn new(crate_id: u32, krate: &SynthCrate, position: usize, count: usize) -> Self {
        let hash = mix(u64::from(crate_id) << 20 ^ position as u64 ^ krate.name.len() as u64);
        let created = publish_time(crate_id, position, count);
        // crates.io builds zip archives for new uploads only (and a backfill of some).
        let zipped = created > LAST_PUBLISH - 30 * 86_400 || hash.is_multiple_of(23);
        VersionFill {
            hash,
            created,
            zipped,
        }
    }

    fn updated(&self, yanked: bool) -> i64 {
        if yanked {
            (self.created + 3_600 + (self.hash % (90 * 86_400)) as i64).min(LAST_PUBLISH)
        } else {
            self.created
        }
    }
}

/// When version `position` of `count` of crate `crate_id` was published: the crate's first
/// version at a time spread over crates.io's life, the others evenly after it.
fn publish_time(crate_id: u32, position: usize, count: usize) -> i64 {
    let span = LAST_PUBLISH - FIRST_PUBLISH;
    let h = mix(u64::from(crate_id) ^ 0xc4a7e);
    let first = FIRST_PUBLISH + (h % span as u64) as i64;
    let step = (LAST_PUBLISH - first) / (count as i64 + 1);
    first + step * position as i64 + (h >> 40) as i64 % step.max(1)
}

fn description(name: &str, h: u64) -> String {
    match h % 4 {
        0 => format!("{name}: a small, fast library"),
        1 => format!("Bindings for \"{name}\", with safe wrappers"),
        2 => String::new(),
        _ => format!("{name} — utilities for building things,\nand more"),
    }
}

fn readme(name: &str, h: u64) -> String {
    format!(
        "# {name}\n\n[![crates.io](https://img.shields.io/crates/v/{name}.svg)]\
         (https://crates.io/crates/{name})\n\nA \"synthetic\" crate, number {h}.\n\n\
         ```toml\n[dependencies]\n{name} = \"1\"\n```\n\nLicensed under MIT or Apache-2.0, at \
         your option.\n"
    )
}

const CATEGORIES: &[&str] = &[
    "{}",
    "{}",
    "{development-tools}",
    "{command-line-utilities,development-tools::build-utils}",
    "{encoding,parser-implementations}",
    "{asynchronous,network-programming,web-programming::http-server}",
];
const KEYWORDS: &[&str] = &[
    "{}",
    "{cli}",
    "{serde,serialization}",
    "{async,tokio,io}",
    "{parser,nom,text,grammar,ast}",
];
const LICENSES: &[&str] = &[
    "MIT OR Apache-2.0",
    "MIT",
    "Apache-2.0",
    "MIT/Apache-2.0",
    "",
];
const EDITIONS: &[&str] = &["2015", "2018", "2021", "2021", "2024"];
const FEATURES: &[&str] = &[
    "{}",
    "{}",
    r#"{"std": [], "default": ["std"]}"#,
    r#"{"full": ["serde", "tokio/full"], "serde": ["dep:serde"], "default": []}"#,
];

/// A field of text as Postgres' CSV output writes it: quoted when it is empty (NULL is the
/// unquoted empty field) or holds a delimiter, a quote or a line break.
fn text(w: &mut impl Write, s: &str) -> io::Result<()> {
    if s.is_empty() || s.contains([',', '"', '\n', '\r']) {
        w.write_all(b"\"")?;
        w.write_all(s.replace('"', "\"\"").as_bytes())?;
        w.write_all(b"\"")
    } else {
        w.write_all(s.as_bytes())
    }
}

/// `bytea` as Postgres prints it: `\x` and lowercase hex.
fn sha256(w: &mut impl Write, bytes: &[u8; 32]) -> io::Result<()> {
    write!(w, "\\x{}", hex::encode(bytes))
}

/// A `timestamp without time zone` as Postgres prints it (the fraction's trailing zeros dropped).
fn timestamp(w: &mut impl Write, unix: i64) -> io::Result<()> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).map_err(io::Error::other)?;
    write!(
        w,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )?;
    let micros = mix(unix as u64) % 1_000_000;
    if micros != 0 {
        let fraction = format!("{micros:06}");
        write!(w, ".{}", fraction.trim_end_matches('0'))?;
    }
    Ok(())
}

const DATE_FORMAT: &[time::format_description::FormatItem<'_>] =
    time::macros::format_description!("[year]-[month]-[day]");

fn check_date(date: &str) -> Result<time::Date> {
    time::Date::parse(date, DATE_FORMAT).context("not a YYYY-MM-DD date")
}

fn next_day(date: &str) -> Result<String> {
    let next = check_date(date)?.next_day().context("date out of range")?;
    Ok(next.format(DATE_FORMAT)?)
}

fn unix_seconds(date: &str) -> Result<i64> {
    Ok(check_date(date)?.midnight().assume_utc().unix_timestamp())
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str, mtime: u64) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    header.set_mtime(mtime);
    tar.append_data(&mut header, name, io::empty())?;
    Ok(())
}

fn file_header(len: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(len);
    header.set_mtime(mtime);
    header
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
    mtime: u64,
) -> Result<()> {
    let mut header = file_header(bytes.len() as u64, mtime);
    tar.append_data(&mut header, name, bytes)?;
    Ok(())
}

/// A fixed 64-bit mix (splitmix64's finalizer): deterministic filler from positions.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
