//! A full-size synthetic crates.io database dump, in the real format, for benchmarks.
//!
//! ```text
//! cargo run --release -p crater-coordinator --example synth-dump -- \
//!     OUT.tar.gz [CRATES=200000] [VERSIONS=1800000] [DOWNLOAD_ROWS=15000000]
//! ```
//!
//! The shape follows crates.io's:
//! - versions per crate are heavily skewed (a Pareto tail): most crates have 1–3 versions, a few
//!   have hundreds (capped at 2,000);
//! - about 3% of versions are yanked, about 1.5% of crates have only yanked versions;
//! - about 5% of releases are preceded by pre-releases (`-alpha.1` … `-rc.2`), about 1% of the
//!   crates have only pre-releases, a few versions carry build metadata (`+build.N`);
//! - recent downloads are Zipf-like over a random popularity rank (exponent 1.1), shared among a
//!   crate's versions with the newest ones getting most, plus a small background (mirrors and
//!   bots fetch every version now and then).
//!
//! version_downloads has one row per version and day with downloads, for the last 90 days. A
//! version is in a day's rows with the probability that a Poisson count at its daily rate is not
//! zero, and the rates are scaled so that the expected number of rows is DOWNLOAD_ROWS.
//! The default, 15 million rows (≈ 167,000 versions downloaded on an average day, ≈ 9% of all
//! versions), is an estimate: crates.io keeps 90 days in the dump, popular crates have dozens of
//! their versions fetched every day (old lockfiles), and mirrors keep most of the long tail
//! trickling in; 10–20 million rows is the range such estimates give, and 15 million is its
//! middle. Pass another count to try a smaller or bigger table.
//!
//! Deterministic: a fixed seed, and each crate drawn from its own seeded generator, so the same
//! arguments give the same bytes. Crates are made and written one at a time
//! ([`write_dump_iter`]), so memory stays small whatever the size.

use anyhow::{Context, Result, bail, ensure};
use crater_coordinator::select::dump::synth::{SynthCrate, SynthVersion, write_dump_iter};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

const SEED: u64 = 0x0c7a_7e75_d00d;
const DAYS: usize = 90;
/// The last day of download rows (the dump is dated the day after).
const LAST_DAY: (i32, u8, u8) = (2025, 6, 29);
const MAX_VERSIONS: u32 = 2_000;
/// Pareto shape of the versions-per-crate tail.
const VERSIONS_SHAPE: f64 = 1.15;
/// Zipf exponent of crate popularity.
const ZIPF: f64 = 1.1;
/// Daily downloads of the most popular crate before scaling.
const TOP_DAILY: f64 = 1_000_000.0;
/// Background daily downloads of every version before scaling (mirrors, bots).
const BACKGROUND: f64 = 0.02;
/// Each older version of a crate gets this fraction of the next newer one's downloads.
const AGE_DECAY: f64 = 0.55;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: synth-dump OUT.tar.gz [CRATES=200000] [VERSIONS=1800000] \
                 [DOWNLOAD_ROWS=15000000]";
    let Some(out) = args.first().map(PathBuf::from) else {
        bail!("{usage}");
    };
    let number = |i: usize, default: u64| -> Result<u64> {
        match args.get(i) {
            Some(s) => s
                .replace('_', "")
                .parse()
                .with_context(|| format!("`{s}`: {usage}")),
            None => Ok(default),
        }
    };
    let crates = usize::try_from(number(1, 200_000)?)?;
    let versions = number(2, 1_800_000)?;
    let download_rows = number(3, 15_000_000)? as f64;
    ensure!(crates > 0, "CRATES must be at least 1");
    ensure!(
        versions >= crates as u64,
        "VERSIONS ({versions}) must be at least CRATES ({crates}): every crate has a version"
    );
    let started = Instant::now();
    let plan = Plan::new(crates, versions, download_rows);
    eprintln!(
        "planned {crates} crates, {versions} versions (most: {}), ~{download_rows:.0} download \
         rows, in {:.1} s",
        plan.counts.iter().max().unwrap_or(&0),
        started.elapsed().as_secs_f64()
    );

    let dates = dates();
    let mut summary = Summary::default();
    write_dump_iter(
        &out,
        (0..crates).map(|i| {
            let krate = plan.make(i, &dates);
            summary.add(&krate);
            krate
        }),
    )?;
    let size = std::fs::metadata(&out)?.len();
    let s = &summary;
    eprintln!(
        "wrote {} ({:.0} MiB) in {:.1} s: {} crates ({} only yanked, {} only pre-releases), \
         {} versions ({} yanked, {} pre-releases), {} download rows; top crate {} downloads",
        out.display(),
        size as f64 / 1048576.0,
        started.elapsed().as_secs_f64(),
        s.crates,
        s.all_yanked,
        s.prerelease_only,
        s.versions,
        s.yanked,
        s.prereleases,
        s.rows,
        s.top_downloads
    );
    eprintln!(
        "versions per crate: 1: {}, 2-3: {}, 4-10: {}, 11-100: {}, 101+: {}",
        s.histogram[0], s.histogram[1], s.histogram[2], s.histogram[3], s.histogram[4]
    );
    Ok(())
}

/// What is drawn for the whole dump before any crate is made.
struct Plan {
    /// Versions of each crate.
    counts: Vec<u32>,
    /// Each crate's daily downloads (all versions), already scaled.
    daily: Vec<f64>,
    /// The background daily downloads of each version, already scaled.
    background: f64,
}

impl Plan {
    fn new(crates: usize, versions: u64, download_rows: f64) -> Plan {
        let mut rng = StdRng::seed_from_u64(SEED);
        // Versions: 1 each, the rest shared by Pareto weights (most weights are near zero).
        let weights: Vec<f64> = (0..crates)
            .map(|_| {
                let u: f64 = rng.random();
                ((1.0 - u).powf(-1.0 / VERSIONS_SHAPE) - 1.0).min(1e4)
            })
            .collect();
        let extra = versions - crates as u64;
        let counts = share(&weights, extra, MAX_VERSIONS - 1);

        // Popularity: a random Zipf rank per crate.
        let mut rank: Vec<u32> = (1..=crates as u32).collect();
        rank.shuffle(&mut rng);
        let base: Vec<f64> = rank
            .iter()
            .map(|&r| TOP_DAILY / f64::from(r).powf(ZIPF))
            .collect();

        // Scale the rates so that the expected number of rows is `download_rows`.
        let expected_rows = |k: f64| -> f64 {
            let mut rows = 0.0;
            for (i, &n) in counts.iter().enumerate() {
                for age in 0..n {
                    let rate = k * (base[i] * version_share(age, n) + BACKGROUND);
                    rows += DAYS as f64 * -(-rate).exp_m1();
                }
            }
            rows
        };
        let target = download_rows.min(DAYS as f64 * versions as f64 * 0.999);
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        while expected_rows(hi) < target {
            hi *= 2.0;
        }
        for _ in 0..50 {
            let mid = (lo + hi) / 2.0;
            if expected_rows(mid) < target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Plan {
            counts,
            daily: base.iter().map(|b| b * hi).collect(),
            background: BACKGROUND * hi,
        }
    }

    /// Crate `i`, from its own generator.
    fn make(&self, i: usize, dates: &[String]) -> SynthCrate {
        let mut rng = StdRng::seed_from_u64(SEED ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let n = self.counts[i];
        let all_yanked = n <= 3 && rng.random_bool(0.015);
        let prerelease_only = !all_yanked && n <= 5 && rng.random_bool(0.01);
        let numbers = if prerelease_only {
            let base = if rng.random_bool(0.8) {
                "0.1.0"
            } else {
                "1.0.0"
            };
            (1..=n).map(|k| format!("{base}-alpha.{k}")).collect()
        } else {
            version_numbers(n, &mut rng)
        };
        let versions = numbers
            .into_iter()
            .enumerate()
            .map(|(position, num)| {
                let age = n - 1 - position as u32;
                let rate = self.daily[i] * version_share(age, n) + self.background;
                let seen = -(-rate).exp_m1(); // P(at least one download in a day)
                let mut downloads = Vec::new();
                for date in dates {
                    if rng.random::<f64>() < seen {
                        let count = if rate < 1.0 {
                            1 + u64::from(rng.random::<f64>() < rate / 2.0)
                        } else {
                            ((rate * rng.random_range(0.5..1.5)).round() as u64).max(1)
                        };
                        downloads.push((date.clone(), count));
                    }
                }
                SynthVersion {
                    num,
                    yanked: all_yanked || rng.random_bool(0.03),
                    downloads,
                    checksum: rng.random(),
                }
            })
            .collect();
        SynthCrate {
            name: crate_name(i),
            versions,
        }
    }
}

/// Shares `total` among `weights` in whole numbers (at most `cap` each), exactly.
fn share(weights: &[f64], total: u64, cap: u32) -> Vec<u32> {
    let mut counts = vec![1u32; weights.len()];
    let mut left = total;
    let mut open: Vec<usize> = (0..weights.len()).collect();
    // Capped crates give their excess back to the others, round after round.
    while left > 0 && !open.is_empty() {
        let sum: f64 = open.iter().map(|&i| weights[i]).sum();
        let mut given = 0u64;
        let mut acc = 0.0f64;
        let mut previous = 0u64;
        for &i in &open {
            acc += if sum > 0.0 {
                weights[i] / sum * left as f64
            } else {
                left as f64 / open.len() as f64
            };
            let upto = (acc.floor() as u64).min(left);
            let room = u64::from(cap + 1 - counts[i]);
            let add = (upto - previous).min(room);
            previous = upto;
            counts[i] += add as u32;
            given += add;
        }
        // What rounding left over goes one by one to the first crates with room.
        let mut rest = left - given.min(left);
        if given == 0 {
            for &i in &open {
                if rest == 0 {
                    break;
                }
                if counts[i] <= cap {
                    counts[i] += 1;
                    rest -= 1;
                }
            }
        }
        left = rest;
        open.retain(|&i| counts[i] <= cap);
    }
    counts
}

/// The share of a crate's downloads that goes to the version `age` versions older than its
/// newest, of `n`.
fn version_share(age: u32, n: u32) -> f64 {
    (1.0 - AGE_DECAY) * AGE_DECAY.powi(age as i32) / (1.0 - AGE_DECAY.powi(n as i32))
}

/// `n` increasing version numbers: mostly patch bumps, some minor and major ones, now and then
/// pre-releases before a release, rarely build metadata.
fn version_numbers(n: u32, rng: &mut StdRng) -> Vec<String> {
    const PRE: [&str; 5] = ["alpha.1", "alpha.2", "beta.1", "rc.1", "rc.2"];
    let mut current = if rng.random_bool(0.1) {
        (1, 0, 0)
    } else {
        (0, 1, 0)
    };
    let mut numbers = vec![format!("{}.{}.{}", current.0, current.1, current.2)];
    let mut pending: Option<((u64, u64, u64), usize)> = None;
    while numbers.len() < n as usize {
        let (major, minor, patch) = match pending {
            Some((target, k)) if k + 1 < PRE.len() && rng.random_bool(0.5) => {
                pending = Some((target, k + 1));
                let (a, b, c) = target;
                numbers.push(format!("{a}.{b}.{c}-{}", PRE[k + 1]));
                continue;
            }
            Some((target, _)) => {
                pending = None;
                target
            }
            None => {
                let r: f64 = rng.random();
                let next = if r < 0.70 {
                    (current.0, current.1, current.2 + 1)
                } else if r < 0.95 {
                    (current.0, current.1 + 1, 0)
                } else {
                    (current.0 + 1, 0, 0)
                };
                if rng.random_bool(0.05) {
                    let (a, b, c) = next;
                    pending = Some((next, 0));
                    numbers.push(format!("{a}.{b}.{c}-{}", PRE[0]));
                    continue;
                }
                next
            }
        };
        current = (major, minor, patch);
        if rng.random_bool(0.003) {
            numbers.push(format!(
                "{major}.{minor}.{patch}+build.{}",
                rng.random_range(1..100)
            ));
        } else {
            numbers.push(format!("{major}.{minor}.{patch}"));
        }
    }
    numbers
}

/// A unique, crate-like name for crate `i`.
fn crate_name(i: usize) -> String {
    const A: [&str; 32] = [
        "serde", "tokio", "async", "fast", "tiny", "rust", "http", "json", "log", "rand", "num",
        "cargo", "proc", "web", "net", "sys", "core", "str", "time", "hash", "byte", "data",
        "file", "term", "cli", "test", "mini", "open", "git", "wasm", "tree", "sync",
    ];
    const B: [&str; 32] = [
        "util", "derive", "macros", "core", "rs", "sys", "lite", "parser", "codec", "client",
        "server", "types", "tools", "build", "io", "map", "cache", "stream", "pool", "fmt", "ext",
        "kit", "lib", "cli", "impl", "api", "db", "graph", "vec", "buf", "bin", "plugin",
    ];
    let (a, b) = (A[i % 32], B[i / 32 % 32]);
    let sep = if (i / 1024).is_multiple_of(2) {
        '-'
    } else {
        '_'
    };
    match i / 2048 {
        0 => format!("{a}{sep}{b}"),
        n => format!("{a}{sep}{b}{n}"),
    }
}

/// The 90 days of download rows, oldest first.
fn dates() -> Vec<String> {
    let (y, m, d) = LAST_DAY;
    let month = time::Month::try_from(m).expect("valid month");
    let last = time::Date::from_calendar_date(y, month, d).expect("valid date");
    (0..DAYS as i64)
        .rev()
        .map(|back| {
            let day = last - time::Duration::days(back);
            format!(
                "{:04}-{:02}-{:02}",
                day.year(),
                u8::from(day.month()),
                day.day()
            )
        })
        .collect()
}

#[derive(Default)]
struct Summary {
    crates: u64,
    versions: u64,
    yanked: u64,
    prereleases: u64,
    all_yanked: u64,
    prerelease_only: u64,
    rows: u64,
    top_downloads: u64,
    histogram: [u64; 5],
}

impl Summary {
    fn add(&mut self, krate: &SynthCrate) {
        let v = &krate.versions;
        self.crates += 1;
        self.versions += v.len() as u64;
        self.yanked += v.iter().filter(|v| v.yanked).count() as u64;
        let pre = v.iter().filter(|v| v.num.contains('-')).count();
        self.prereleases += pre as u64;
        self.all_yanked += u64::from(v.iter().all(|v| v.yanked));
        self.prerelease_only += u64::from(pre == v.len());
        self.rows += v.iter().map(|v| v.downloads.len() as u64).sum::<u64>();
        let downloads = v.iter().flat_map(|v| &v.downloads).map(|d| d.1).sum();
        self.top_downloads = self.top_downloads.max(downloads);
        let bucket = match v.len() {
            0 | 1 => 0,
            2..=3 => 1,
            4..=10 => 2,
            11..=100 => 3,
            _ => 4,
        };
        self.histogram[bucket] += 1;
    }
}
