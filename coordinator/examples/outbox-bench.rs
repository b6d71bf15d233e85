//! Results stored per second through the outbox to an S3 bucket: RESULTS small results (a 4 KiB
//! log each, so three objects: raw, page, JSON) committed to a fresh outbox, then the uploader
//! started with CONCURRENCY and timed until the outbox is empty. Prints the rate and this
//! process's peak RSS.
//!
//!   cargo run --release --example outbox-bench -- ENDPOINT BUCKET RESULTS CONCURRENCY
//!
//! Credentials from the AWS environment; `bench/s3-concurrency.sh` starts moto and Garage and
//! runs it for several concurrencies.

#[path = "bench_common/rss.rs"]
mod rss;

use crater_coordinator::results::outbox::Outbox;
use crater_coordinator::results::record::ResultRecord;
use crater_coordinator::results::store::{S3Options, S3Store, Store};
use crater_coordinator::results::uploads::{Finish, Uploads};
use crater_proto::tool::Tool;
use rss::peak_rss_kib;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, bucket, results, concurrency] = args.as_slice() else {
        anyhow::bail!("usage: outbox-bench ENDPOINT BUCKET RESULTS CONCURRENCY");
    };
    let results: usize = results.parse()?;
    let concurrency: usize = concurrency.parse()?;
    let store = Store::S3(
        S3Store::connect(
            &S3Options {
                bucket: bucket.clone(),
                endpoint: Some(endpoint.clone()),
                path_style: true,
                timeout: Duration::from_secs(60),
            },
            true,
        )
        .await?,
    );
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let outbox = Outbox::open(&dir.path().join(".spool"), u64::MAX)?;
    // A build log's worth of lines, a little different per crate.
    let run = std::process::id();
    for i in 0..results {
        let name = format!("bench-{run}-{i:05}");
        let text: String = (0..64)
            .map(|line| format!("{line:>6}   Compiling {name} v1.0.{line} (registry)   \n"))
            .collect();
        let record = ResultRecord::skipped(Tool::Check, &name, "1.0.0", "bench", text.len() as u64);
        outbox.commit_text(Tool::Check, &record, &text)?;
    }
    let start = Instant::now();
    let uploads = Uploads::start(&outbox, &store, concurrency, None);
    let finish = uploads
        .finish(
            &outbox,
            &store,
            &CancellationToken::new(),
            Some(Duration::from_secs(60)),
        )
        .await;
    let elapsed = start.elapsed();
    anyhow::ensure!(finish == Finish::Stored, "not stored: {finish:?}");
    println!(
        "results={results} concurrency={concurrency} seconds={:.2} per_s={:.1} peak_rss_kib={}",
        elapsed.as_secs_f64(),
        results as f64 / elapsed.as_secs_f64(),
        peak_rss_kib()
    );
    Ok(())
}
