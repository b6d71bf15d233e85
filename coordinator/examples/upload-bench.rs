//! Upload throughput of the S3 store (the code the outbox's uploader runs: one request, or a
//! multipart upload streamed from the file) against writing the same bytes to local disk, in
//! alternating rounds, plus this process's peak RSS before and after the uploads.
//!
//!   cargo run --release --example upload-bench -- ENDPOINT BUCKET SIZE_MIB ROUNDS
//!
//! Credentials from the AWS environment; `bench/s3-upload.sh` starts a local server and runs it.

#[path = "bench_common/rss.rs"]
mod rss;

use crater_coordinator::results::store::{RAW_CONTENT_TYPE, S3Options, S3Store};
use rss::peak_rss_kib;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, bucket, size_mib, rounds] = args.as_slice() else {
        anyhow::bail!("usage: upload-bench ENDPOINT BUCKET SIZE_MIB ROUNDS");
    };
    let size_mib: u64 = size_mib.parse()?;
    let rounds: usize = rounds.parse()?;
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let log = dir.path().join("log");
    write_log(&log, size_mib << 20)?;

    let store = S3Store::connect(
        &S3Options {
            bucket: bucket.clone(),
            endpoint: Some(endpoint.clone()),
            path_style: true,
            timeout: Duration::from_secs(300),
        },
        true,
    )
    .await?;
    let rss_before = peak_rss_kib();
    let (mut s3, mut disk) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so neither always meets a warmer cache.
        for first in [round % 2 == 0, round % 2 != 0] {
            if first {
                let start = Instant::now();
                store
                    .put_file("bench/log", &log, RAW_CONTENT_TYPE)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                s3.push(start.elapsed());
            } else {
                let start = Instant::now();
                copy_to_disk(&log, &dir.path().join("copy"))?;
                disk.push(start.elapsed());
            }
        }
    }
    let rss_after_uploads = peak_rss_kib();
    let mib_per_s = |d: Duration| size_mib as f64 / d.as_secs_f64();
    let (s3, disk) = (median(s3), median(disk));
    println!(
        "size_mib={size_mib} rounds={rounds} s3_mib_s={:.1} disk_mib_s={:.1} ratio={:.3} \
         peak_rss_before_kib={rss_before} peak_rss_after_kib={rss_after_uploads}",
        mib_per_s(s3),
        mib_per_s(disk),
        mib_per_s(s3) / mib_per_s(disk),
    );
    Ok(())
}

/// Text lines, like a build log.
fn write_log(path: &std::path::Path, bytes: u64) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0;
    let mut i = 0u64;
    while written < bytes {
        let line = format!("{i:>12}   Compiling crate-{i} v0.1.{} (registry)\n", i % 97);
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        i += 1;
    }
    out.flush()
}

/// What the local store's writes amount to: the bytes written and synced.
fn copy_to_disk(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    let mut input = std::fs::File::open(from)?;
    let mut output = std::fs::File::create(to)?;
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = input.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        output.write_all(&buffer[..n])?;
    }
    output.sync_all()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}
