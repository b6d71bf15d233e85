//! A crate from a directory on disk, packed the way crates.io ships crates.
//!
//! The directory becomes a gzip'd tar whose one top directory is `{name}-{version}/`, like a
//! .crate file, so the worker loop treats both alike and a remote agent needs no access to the
//! coordinator's disk. `target/` and `.git/` at the top are left out: they are build output and
//! history, often large, never needed to build.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::path::Path;

#[derive(Debug)]
pub struct LocalCrate {
    pub name: String,
    pub version: String,
    pub archive: Bytes,
}

/// The largest packed crate: it travels inside one gRPC message.
const MAX_ARCHIVE_BYTES: usize = crater_proto::MAX_MESSAGE_BYTES - (1 << 20);

pub fn pack(dir: &Path) -> Result<LocalCrate> {
    let manifest_path = dir.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let (name, version) =
        name_and_version(&manifest).with_context(|| format!("in {}", manifest_path.display()))?;

    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    builder.follow_symlinks(false);
    let top = format!("{name}-{version}");
    builder.append_dir(&top, dir)?;
    append_tree(&mut builder, dir, Path::new(&top), true)?;
    let archive = builder.into_inner()?.finish()?;
    if archive.len() > MAX_ARCHIVE_BYTES {
        bail!(
            "packed it is {} MiB, more than the {} MiB a local crate may be",
            archive.len() >> 20,
            MAX_ARCHIVE_BYTES >> 20
        );
    }
    Ok(LocalCrate {
        name,
        version,
        archive: archive.into(),
    })
}

fn name_and_version(manifest: &str) -> Result<(String, String)> {
    let table: toml::Table = manifest.parse().context("not valid TOML")?;
    let package = table
        .get("package")
        .and_then(|p| p.as_table())
        .context("no [package] section (a workspace root is not a crate)")?;
    let name = package
        .get("name")
        .and_then(|n| n.as_str())
        .context("no package name")?;
    crater_proto::crate_ref::validate_name(name)?;
    let version = match package.get("version") {
        None => "0.0.0".to_owned(), // cargo's default when a package has no version
        Some(v) => match v.as_str() {
            Some(v) => semver::Version::parse(v)
                .with_context(|| format!("invalid version `{v}`"))?
                .to_string(),
            None => bail!("the version is inherited from a workspace; give the crate its own"),
        },
    };
    Ok((name.to_owned(), version))
}

fn append_tree<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    prefix: &Path,
    top: bool,
) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name()); // the same directory packs to the same bytes
    for entry in entries {
        let name = entry.file_name();
        if top && (name == "target" || name == ".git") {
            continue;
        }
        let path = entry.path();
        let inner = prefix.join(&name);
        builder
            .append_path_with_name(&path, &inner)
            .with_context(|| format!("packing {}", path.display()))?;
        if entry.file_type()?.is_dir() {
            append_tree(builder, &path, &inner, false)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;

    #[test]
    fn packs_the_crate_under_name_version_without_target_and_git() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("Cargo.toml"),
            "[package]\nname = \"fixture\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        for d in ["src", "target/debug", ".git", "tests/.git"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("src/lib.rs"), "pub fn f() {}").unwrap();
        std::fs::write(root.join("target/debug/big"), "x").unwrap();

        let packed = pack(root).unwrap();
        assert_eq!(
            (packed.name.as_str(), packed.version.as_str()),
            ("fixture", "0.1.0")
        );
        let mut archive = tar::Archive::new(GzDecoder::new(&packed.archive[..]));
        let mut paths: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "fixture-0.1.0",
                "fixture-0.1.0/Cargo.toml",
                "fixture-0.1.0/src",
                "fixture-0.1.0/src/lib.rs",
                "fixture-0.1.0/tests",
                "fixture-0.1.0/tests/.git",
            ]
        );
    }

    #[test]
    fn refuses_what_is_not_a_crate() {
        let dir = tempfile::tempdir().unwrap();
        assert!(pack(dir.path()).is_err(), "no Cargo.toml");
        std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\n").unwrap();
        let err = format!("{:#}", pack(dir.path()).unwrap_err());
        assert!(err.contains("no [package]"), "{err}");
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"../etc\"\nversion = \"1.0.0\"\n",
        )
        .unwrap();
        assert!(pack(dir.path()).is_err(), "a name that is a path");
    }
}
