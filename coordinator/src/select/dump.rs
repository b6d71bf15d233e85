//! crates.io's database dump (`db-dump.tar.gz`): for every crate, the version to run and its
//! recent downloads.
//!
//! [`load`] streams three tables of the dump through [`db_dump::Loader`] (which knows the dump's
//! current columns and value formats) and keeps only what the answer needs, so a full-size dump
//! (≈200k crates, ≈1.8M versions, tens of millions of download rows) is read in one pass with
//! little memory:
//!
//! - `crates.csv`: id → name;
//! - `versions.csv`: version id → crate id, and per crate only the best version seen so far;
//! - `version_downloads.csv` (one row per version and day, the last 90 days): a sum per version.
//!
//! The tables may come in any order; they are joined at the end. [`synth`] writes dumps in the
//! real format, for the tests here and for `bench/dump-select.sh`.

pub mod synth;

use anyhow::{Context, Result, bail};
use semver::Version;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

/// One crate picked from the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpCrate {
    pub name: String,
    pub version: String,
    /// hex SHA-256 of the .crate (the versions table's checksum)
    pub checksum: String,
    /// downloads of all its versions in the dump's version_downloads (the last 90 days)
    pub downloads: u64,
}

/// Counts over the whole dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Rows of `crates.csv`.
    pub crates: usize,
    /// Rows of `versions.csv`.
    pub versions: usize,
    /// crates left out because every version is yanked
    pub all_yanked: usize,
}

/// The version picked so far for one crate.
struct Best {
    version: Version,
    checksum: [u8; 32],
}

/// Whether `candidate` is a better pick than `current`: stable beats pre-release, then the
/// higher semver version wins.
fn better(candidate: &Version, current: &Version) -> bool {
    let rank = |v: &Version| v.pre.is_empty();
    (rank(candidate), candidate) > (rank(current), current)
}

/// Every crate with a non-yanked version, most downloaded first (ties: by name, ascending).
/// For each crate: the highest non-yanked semver version, preferring stable versions; a
/// pre-release only when the crate has no stable non-yanked version.
///
/// A file that is not a crates.io dump is an error naming `path` (a tarball without a
/// `crates.csv` table too).
pub fn load(path: &Path) -> Result<(Vec<DumpCrate>, DumpStats)> {
    let mut stats = DumpStats::default();
    let mut names: HashMap<u32, String> = HashMap::new();
    // Crate id → its best non-yanked version; `None` while it has only yanked ones.
    let mut best: HashMap<u32, Option<Best>> = HashMap::new();
    let mut crate_of: HashMap<u32, u32> = HashMap::new();
    let mut version_downloads: HashMap<u32, u64> = HashMap::new();
    db_dump::Loader::new()
        .crates(|row| {
            stats.crates += 1;
            names.insert(row.id.0, row.name);
        })
        .versions(|row| {
            stats.versions += 1;
            crate_of.insert(row.id.0, row.crate_id.0);
            let slot = best.entry(row.crate_id.0).or_insert(None);
            if row.yanked {
                return;
            }
            if slot.as_ref().is_none_or(|b| better(&row.num, &b.version)) {
                *slot = Some(Best {
                    version: row.num,
                    checksum: row.tar_sha256,
                });
            }
        })
        .version_downloads(|row| {
            *version_downloads.entry(row.version_id.0).or_default() += row.downloads;
        })
        .load(path)
        .with_context(|| format!("reading the crates.io database dump {}", path.display()))?;
    if stats.crates == 0 {
        bail!(
            "{}: not a crates.io database dump (it has no crates.csv rows)",
            path.display()
        );
    }

    let mut downloads: HashMap<u32, u64> = HashMap::with_capacity(best.len());
    for (version_id, count) in version_downloads {
        if let Some(&crate_id) = crate_of.get(&version_id) {
            *downloads.entry(crate_id).or_default() += count;
        }
    }
    drop(crate_of);

    let mut crates = Vec::with_capacity(best.len());
    for (crate_id, pick) in best {
        let Entry::Occupied(name) = names.entry(crate_id) else {
            continue; // a version of a crate missing from crates.csv
        };
        let Some(pick) = pick else {
            stats.all_yanked += 1;
            continue;
        };
        crates.push(DumpCrate {
            name: name.remove(),
            version: pick.version.to_string(),
            checksum: hex::encode(pick.checksum),
            downloads: downloads.get(&crate_id).copied().unwrap_or(0),
        });
    }
    crates.sort_unstable_by(|a, b| {
        b.downloads
            .cmp(&a.downloads)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok((crates, stats))
}

#[cfg(test)]
mod tests {
    use super::synth::{SynthCrate, SynthVersion, write_dump};
    use super::*;

    fn version(num: &str, yanked: bool, downloads: &[(&str, u64)], seed: u8) -> SynthVersion {
        let mut checksum = [0u8; 32];
        for (i, b) in checksum.iter_mut().enumerate() {
            *b = seed.wrapping_mul(31).wrapping_add(i as u8);
        }
        SynthVersion {
            num: num.to_owned(),
            yanked,
            downloads: downloads.iter().map(|&(d, n)| (d.to_owned(), n)).collect(),
            checksum,
        }
    }

    fn krate(name: &str, versions: Vec<SynthVersion>) -> SynthCrate {
        SynthCrate {
            name: name.to_owned(),
            versions,
        }
    }

    fn hex_of(seed: u8) -> String {
        hex::encode(version("0.0.0", false, &[], seed).checksum)
    }

    fn sample() -> Vec<SynthCrate> {
        vec![
            // Newest yanked: the one before it. Downloads of every version and date count.
            krate(
                "yanky",
                vec![
                    version("0.9.0", false, &[("2025-03-01", 5)], 1),
                    version("1.0.0", false, &[("2025-03-01", 10), ("2025-03-02", 20)], 2),
                    version("1.1.0", true, &[("2025-03-02", 30)], 3),
                ],
            ),
            // Stable beats a newer pre-release; semver order, not publication or string order.
            krate(
                "semverish",
                vec![
                    version("1.10.0", false, &[("2025-03-01", 7)], 4),
                    version("1.9.0", false, &[("2025-03-01", 100)], 5),
                    version("2.0.0-rc.1", false, &[("2025-03-03", 1)], 6),
                    version("1.2.0", false, &[], 7),
                ],
            ),
            // Only pre-releases: the newest non-yanked one (numeric parts compare as numbers).
            krate(
                "prerelease-only",
                vec![
                    version("0.1.0-beta.2", false, &[("2025-03-01", 40)], 8),
                    version("0.1.0-beta.10", false, &[("2025-03-02", 2)], 9),
                    version("0.1.0-alpha.1", false, &[], 10),
                    version("0.1.0-rc.1", true, &[("2025-03-03", 3)], 11),
                ],
            ),
            // Only yanked versions: left out (its downloads do not matter).
            krate(
                "all-yanked",
                vec![
                    version("1.0.0", true, &[("2025-03-01", 1_000)], 12),
                    version("1.0.1", true, &[], 13),
                ],
            ),
            // Ties on downloads: by name. `zeta` and `alpha` 45 each, like `prerelease-only`.
            krate(
                "zeta",
                vec![version("0.1.0", false, &[("2025-03-03", 45)], 14)],
            ),
            krate(
                "alpha",
                vec![version(
                    "3.0.0",
                    false,
                    &[("2025-03-01", 40), ("2025-03-02", 5)],
                    15,
                )],
            ),
            // No downloads at all; build metadata kept.
            krate("quiet", vec![version("0.0.1+build.5", false, &[], 16)]),
            // No versions: neither listed nor counted as all-yanked.
            krate("empty", vec![]),
            // A stable version older than a yanked newer stable and a pre-release.
            krate(
                "mixed",
                vec![
                    version("0.3.0", false, &[("2025-03-01", 1)], 17),
                    version("0.4.0", true, &[], 18),
                    version("0.5.0-alpha.1", false, &[], 19),
                ],
            ),
        ]
    }

    fn write_sample(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("db-dump.tar.gz");
        write_dump(&path, &sample()).unwrap();
        path
    }

    fn expected() -> Vec<DumpCrate> {
        let c = |name: &str, version: &str, seed: u8, downloads: u64| DumpCrate {
            name: name.to_owned(),
            version: version.to_owned(),
            checksum: hex_of(seed),
            downloads,
        };
        vec![
            c("semverish", "1.10.0", 4, 108),
            c("yanky", "1.0.0", 2, 65),
            c("alpha", "3.0.0", 15, 45),
            c("prerelease-only", "0.1.0-beta.10", 9, 45),
            c("zeta", "0.1.0", 14, 45),
            c("mixed", "0.3.0", 17, 1),
            c("quiet", "0.0.1+build.5", 16, 0),
        ]
    }

    #[test]
    fn picks_versions_and_orders_by_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_sample(dir.path());
        let (crates, stats) = load(&path).unwrap();
        assert_eq!(crates, expected());
        assert_eq!(
            stats,
            DumpStats {
                crates: 9,
                versions: 19,
                all_yanked: 1,
            }
        );
        // `--top 3` is the head of the same list.
        let top: Vec<&str> = crates.iter().take(3).map(|c| c.name.as_str()).collect();
        assert_eq!(top, ["semverish", "yanky", "alpha"]);
        assert_eq!(crates[..3], expected()[..3]);
        // The checksum is the versions table's, as hex.
        assert_eq!(
            crates[0].checksum,
            "7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b"
        );
    }

    #[test]
    fn synthetic_dump_has_the_real_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_sample(dir.path());
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap());
        let mut tar = tar::Archive::new(gz);
        let mut names = Vec::new();
        let mut tables = HashMap::new();
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".csv") {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
                tables.insert(name.rsplit('/').next().unwrap().to_owned(), text);
            }
            names.push(name);
        }
        // The day after the newest download row, at the daily job's time.
        assert_eq!(
            names,
            [
                "2025-03-04-020027/",
                "2025-03-04-020027/README.md",
                "2025-03-04-020027/metadata.json",
                "2025-03-04-020027/data/",
                "2025-03-04-020027/data/crates.csv",
                "2025-03-04-020027/data/versions.csv",
                "2025-03-04-020027/data/version_downloads.csv",
            ]
        );
        let versions = &tables["versions.csv"];
        assert!(versions.starts_with(
            "bin_names,categories,crate_id,crate_size,created_at,description,documentation,\
             downloads,edition,features,has_lib,homepage,id,keywords,license,links,num,\
             num_no_build,published_by,repository,rust_version,tar_sha256,updated_at,yanked,\
             zip_json_sha256,zip_sha256\n"
        ));
        let yanked_row = versions
            .lines()
            .find(|l| l.contains(",1.1.0,1.1.0,"))
            .unwrap();
        assert!(yanked_row.contains(",t,"), "{yanked_row}");
        assert!(
            yanked_row.contains(&format!("\\x{}", hex_of(3))),
            "{yanked_row}"
        );
        assert!(versions.contains(",0.0.1+build.5,0.0.1,"));
        assert!(tables["crates.csv"].starts_with(
            "created_at,description,documentation,homepage,id,max_features,max_upload_size,name,\
             readme,repository,trustpub_only,updated_at\n"
        ));
        assert_eq!(
            tables["version_downloads.csv"]
                .lines()
                .take(3)
                .collect::<Vec<_>>(),
            [
                "date,downloads,version_id",
                "2025-03-01,5,1",
                "2025-03-01,10,2"
            ]
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dump.tar.gz");
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn not_a_dump_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // Not gzip at all.
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "just some text, not a dump\n").unwrap();
        let err = format!("{:#}", load(&text).unwrap_err());
        assert!(err.contains(&text.display().to_string()), "{err}");
        // A gzip'd tarball, but without the dump's tables.
        let tarball = dir.path().join("other.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&tarball).unwrap(),
            flate2::Compression::default(),
        );
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        tar.append_data(&mut header, "hello/readme.txt", &b"hello"[..])
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        let err = format!("{:#}", load(&tarball).unwrap_err());
        assert!(err.contains(&tarball.display().to_string()), "{err}");
        assert!(err.contains("not a crates.io database dump"), "{err}");
    }
}
