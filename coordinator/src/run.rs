//! `run` and `serve`: choosing the work, starting the coordinator, and stopping cleanly.
//!
//! `run` is `serve` plus an agent in the same process, talking to it over real gRPC on a loopback
//! port, so single-host mode exercises exactly the path a fleet uses. Both stop on Ctrl-C or
//! SIGTERM: the agent removes its containers, unfinished crates simply have no result yet, and the
//! same command run again picks up where it stopped.

use crate::cli::{PagesArgs, RunArgs, SelectArgs, ServeArgs};
use crate::progress::{self, Progress};
use crate::report::live::LiveReport;
use crate::results::outbox::{self, Outbox};
use crate::results::record::ResultRecord;
use crate::results::spool;
use crate::results::store::Store;
use crate::results::uploads::{Finish, OnStored, Uploads, unstored_note};
use crate::select::index::Index;
use crate::select::rerun::{self, Leave, RerunPolicy};
use crate::select::{self, DumpChoice, InputError, Inputs};
use crate::serve::auth::Security;
use crate::serve::metrics;
use crate::serve::metrics_server::{MetricsAccess, MetricsServer};
use crate::serve::queue::JobSpec;
use crate::serve::{Coordinator, Event};
use anyhow::{Context, Result, bail};
use crater_agent::AgentConfig;
use crater_agent::args::SlotArgs;
use crater_proto::tool::Tool;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::io::Write;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

pub use crate::cli::exit;

/// The work chosen before anything starts.
pub struct Plan {
    pub jobs: Vec<JobSpec>,
    pub errors: Vec<InputError>,
}

/// The spool: running jobs' logs and the outbox of results waiting for the store.
pub fn spool_dir(args: &SelectArgs) -> std::path::PathBuf {
    args.out.join(".spool")
}

/// Selects crates, reports refused entries, records `skipped` verdicts (when given the
/// outbox; a dry run is not), and leaves out ignored crates and those the store (or the outbox)
/// says need no run. Says what it chose and why before any work starts.
pub async fn plan(args: &SelectArgs, store: &Store, outbox: Option<&Outbox>) -> Result<Plan> {
    let dump = (args.all || args.top.is_some()).then(|| DumpChoice {
        source: args.db_dump.clone(),
        refresh: args.refresh_crates,
        top: args.top,
    });
    let inputs = Inputs {
        crates: args.crates.clone(),
        crate_lists: args.crate_list.clone(),
        local_crates: args.local_crate.clone(),
        dump,
        ignore: rerun::ignore_list(&args.ignore_file)?,
    };
    if inputs.crates.is_empty()
        && inputs.crate_lists.is_empty()
        && inputs.local_crates.is_empty()
        && inputs.dump.is_none()
    {
        bail!(
            "nothing to run: give --crate, --crate-list, --local-crate, --top or --all (see --help)"
        );
    }
    let index = Index::new(args.index_url.clone())?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the output directory {}", args.out.display()))?;
    // With a bucket, the crate list cache lives there (as the seed keeps it), so another
    // coordinator host resumes without reading the dump: brought down before selecting, put
    // back when the selection read the dump again.
    let bucket = match store {
        Store::S3(s3) if inputs.dump.is_some() => Some(s3),
        _ => None,
    };
    let cached = match bucket {
        Some(s3) => Some(s3.download_crate_list(&args.out).await?),
        None => None,
    };
    let selection = select::select(&inputs, args.tool, &index, &args.out).await?;
    // Not from a dry run (`list`), which may only read the bucket.
    if let (Some(s3), Some(cached), Some(_)) = (bucket, cached, outbox) {
        s3.upload_crate_list(&args.out, cached).await?;
    }
    for error in &selection.errors {
        eprintln!("error: {error}");
    }
    let policy = RerunPolicy {
        rerun: args.rerun,
        retry_failed: args.retry_failed,
        max_age: Duration::from_secs(args.max_age.saturating_mul(24 * 3600)),
    };
    let now = time::OffsetDateTime::now_utc();
    let ignored = selection.ignored;
    let wanted: Vec<(String, String)> = (selection.jobs.iter().map(|j| (&j.name, &j.version)))
        .chain(selection.skipped.iter().map(|s| (&s.name, &s.version)))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let mut existing = store
        .finished(args.tool, &wanted, args.retry_failed)
        .await?;
    // Results an earlier process finished but did not store yet count as finished: they are
    // stored first, not run again.
    let unstored = match outbox {
        Some(outbox) => outbox.entries(),
        None => outbox::peek(&spool_dir(args)),
    };
    let unstored: Vec<_> = unstored.iter().filter(|e| e.tool == args.tool).collect();
    if !unstored.is_empty() {
        eprintln!(
            "{} results of an earlier run wait in {} and are stored first",
            unstored.len(),
            spool_dir(args).display()
        );
    }
    for entry in unstored {
        let key = (entry.record.name.clone(), entry.record.version.clone());
        existing.insert(key, (&entry.record).into());
    }
    let (mut finished, mut not_failed, mut skipped) = (0, 0, 0);
    let mut jobs = Vec::new();
    for job in selection.jobs {
        let key = (job.name.clone(), job.version.clone());
        match policy.leave_out(existing.get(&key), now) {
            None => jobs.push(job),
            Some(Leave::Finished) => finished += 1,
            Some(Leave::NotFailed) => not_failed += 1,
        }
    }
    for skip in &selection.skipped {
        skipped += 1;
        eprintln!("skipped: {} {}: {}", skip.name, skip.version, skip.reason);
        let key = (skip.name.clone(), skip.version.clone());
        // A version yanked after it ran keeps its real result.
        if let Some(outbox) = outbox
            && !existing.contains_key(&key)
        {
            let text = format!("[crater-at-home] skipped: {}\n", skip.reason);
            let record = ResultRecord::skipped(
                args.tool,
                &skip.name,
                &skip.version,
                &skip.reason,
                text.len() as u64,
            );
            outbox.commit_text(args.tool, &record, &text)?;
        }
    }
    if args.reverse {
        jobs.reverse();
    }
    if let Some(seed) = args.shuffle {
        jobs.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    }

    let mut line = format!("{} crates to run with `{}`", jobs.len(), args.tool);
    let mut left_out = Vec::new();
    if finished > 0 {
        left_out.push(format!(
            "{finished} already finished in {} within {} days (--rerun or --max-age to run them)",
            store.describe(),
            args.max_age
        ));
    }
    if not_failed > 0 {
        left_out.push(format!("{not_failed} not failed (--retry-failed)"));
    }
    if ignored > 0 {
        left_out.push(format!("{ignored} ignored (built-in list, --ignore-file)"));
    }
    if skipped > 0 {
        left_out.push(format!("{skipped} skipped (yanked or missing versions)"));
    }
    if !selection.errors.is_empty() {
        left_out.push(format!("{} entries refused", selection.errors.len()));
    }
    if !left_out.is_empty() {
        line.push_str("; ");
        line.push_str(&left_out.join(", "));
    }
    eprintln!("{line}");
    Ok(Plan {
        jobs,
        errors: selection.errors,
    })
}

/// `list`: what `run` with the same options would run, without running it.
pub async fn list(args: SelectArgs) -> Result<u8> {
    let store = Store::open(args.store.bucket.s3_options(), &args.out, false).await?;
    let plan = plan(&args, &store, None).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for job in &plan.jobs {
        writeln!(out, "{} {}", job.name, job.version)?;
    }
    out.flush()?;
    Ok(if plan.errors.is_empty() {
        exit::OK
    } else {
        exit::INPUT_REFUSED
    })
}

/// What `run` and `serve` start from: the checked store, the spool (taken over, with what an
/// earlier process left in it), and the chosen work.
async fn prepare(args: &SelectArgs) -> Result<(Store, Outbox, Plan)> {
    let store = Store::open(args.store.bucket.s3_options(), &args.out, true).await?;
    let outbox = Outbox::open(&spool_dir(args), args.store.spool_max_bytes())?;
    let plan = plan(args, &store, Some(&outbox)).await?;
    Ok((store, outbox, plan))
}

pub async fn run(args: RunArgs) -> Result<u8> {
    let (store, outbox, plan) = prepare(&args.select).await?;
    let input_status = if plan.errors.is_empty() {
        exit::OK
    } else {
        exit::INPUT_REFUSED
    };
    let concurrency = args.select.store.upload_concurrency;
    let patience = Some(args.store_patience);
    let tool = args.select.tool;
    let live = live_report(&args.pages, &store, tool);
    let uploads = Uploads::start(&outbox, &store, concurrency, recorder(&live));
    if plan.jobs.is_empty() {
        let finish = uploads
            .finish(&outbox, &store, &stop_on_signal(), patience)
            .await;
        if finish != Finish::Interrupted {
            finish_report(live).await;
        }
        match finish {
            Finish::Stored => {}
            Finish::Interrupted => {
                unstored_note(&outbox);
                return Ok(exit::INTERRUPTED);
            }
            Finish::GaveUp(error) => {
                gave_up_note(&outbox, &error, args.store_patience);
                return Ok(exit::HARNESS_FAILED);
            }
        }
        eprintln!("nothing to do");
        return Ok(input_status);
    }
    let total = plan.jobs.len() as u64;
    let mut agent_config = agent_config(&args.agent).await?;
    // Asked once here, for a clear error before anything starts; the agent reuses the answer.
    let capabilities = crater_agent::session::probe(&agent_config).await?;
    match capabilities.get(tool.name()) {
        Some(Ok(())) => {}
        Some(Err(reason)) => bail!(
            "the tool `{tool}` cannot run on this machine: {reason}. The image built from \
             docker/Dockerfile has everything (use it with --image TAG --toolchain image)"
        ),
        None => bail!("the worker image has no tool `{tool}` (docker/worker.sh defines the tools)"),
    }
    agent_config.capabilities = Some(capabilities);

    // Only from here on: until now Ctrl-C simply ends the process (nothing to clean up yet).
    let stop = stop_on_signal();
    // The embedded agent is this process: it cannot fall silent while the coordinator runs.
    // The agent of an earlier `run` died with it: nothing to hold back for.
    let (coordinator, mut events) = Coordinator::new(
        outbox.clone(),
        limits(&args.select),
        DEFAULT_LEASE_TIMEOUT,
        plan.jobs,
        &[],
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server_stop = CancellationToken::new();
    let server = spawn_server(&coordinator, listener, &Security::loopback(), &server_stop);

    let agent_config = AgentConfig {
        coordinator: format!("http://{address}"),
        ..agent_config
    };
    let mut agent = tokio::spawn(crater_agent::run_agent(agent_config, stop.child_token()));
    let mut progress = Progress::new(total);
    let mut complete = coordinator.completion();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut agent_result = None;
    let mut interrupted = false;
    loop {
        tokio::select! {
            Some(event) = events.recv() => progress.on_event(event),
            _ = tick.tick() => progress.on_status(&coordinator.status()),
            Ok(_) = complete.wait_for(|done| *done) => break,
            () = stop.cancelled() => { interrupted = true; break }
            result = &mut agent => { agent_result = Some(result); break }
        }
    }
    // Results that were being stored when the loop ended still count.
    drain_events(&mut events, &mut progress);
    progress.finish();

    if agent_result.is_none() {
        if !interrupted {
            coordinator.drain().await;
        }
        agent_result = Some(agent.await);
    }
    stop_server(server, &server_stop).await;
    drain_events(&mut events, &mut progress);

    let agent_failed = match agent_result.expect("set above") {
        Ok(Ok(())) => false,
        Ok(Err(e)) => {
            eprintln!("error: the agent failed: {e:#}");
            true
        }
        Err(e) => {
            eprintln!("error: the agent panicked: {e}");
            true
        }
    };
    let finish = if interrupted {
        Finish::Interrupted
    } else {
        uploads.finish(&outbox, &store, &stop, patience).await
    };
    if finish != Finish::Interrupted {
        finish_report(live).await;
    }
    eprint!(
        "{}",
        progress::summary(
            progress.finished(),
            progress.elapsed(),
            &store.results_location(tool)
        )
    );
    if let Finish::GaveUp(error) = &finish {
        gave_up_note(&outbox, error, args.store_patience);
        return Ok(exit::HARNESS_FAILED);
    }
    if finish == Finish::Interrupted {
        eprintln!(
            "\ninterrupted: {} of {total} crates finished; run the same command again to finish \
             the rest",
            progress.finished().len()
        );
        unstored_note(&outbox);
        return Ok(exit::INTERRUPTED);
    }
    let finished_all = progress.finished().len() as u64 == total;
    if agent_failed || coordinator.store_failures() > 0 || !finished_all {
        return Ok(exit::HARNESS_FAILED);
    }
    Ok(input_status)
}

/// Says why `run` stopped waiting for the store, and that nothing is lost.
fn gave_up_note(outbox: &Outbox, error: &str, patience: Duration) {
    let backlog = outbox.backlog().borrow().clone();
    eprintln!(
        "\nerror: storing results keeps failing ({error}), for more than --store-patience \
         ({}): giving up waiting. {} finished results ({} MiB) are kept in {}; run the same \
         command again once the store takes them, and it stores them without running those \
         crates again",
        humantime::format_duration(patience),
        backlog.entries,
        backlog.bytes >> 20,
        outbox.spool_dir().display()
    );
}

fn drain_events(events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>, progress: &mut Progress) {
    while let Ok(event) = events.try_recv() {
        progress.on_event(event);
    }
}

/// The embedded agent's settings; the worker image is made ready here, before the progress bar.
async fn agent_config(args: &SlotArgs) -> Result<AgentConfig> {
    let mut config = AgentConfig::new(String::new());
    args.apply(&mut config);
    if config.image.is_none() {
        let docker = crater_agent::docker::connect().await?;
        config.image = Some(crater_agent::image::ensure_local_image(&docker, false).await?);
    }
    Ok(config)
}

/// The lease timeout of `run`, whose agent is in the same process.
const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(45);

pub async fn serve(args: ServeArgs) -> Result<u8> {
    // Off loopback: TLS and agent tokens, or no start at all.
    let security = Security::for_serve(args.listen, &args.fleet)?;
    let metrics_access = (args.metrics_listen)
        .map(|listen| MetricsAccess::for_serve(listen, &args.fleet))
        .transpose()?;
    // Read before the outbox takes the spool over and clears the logs of running jobs.
    let interrupted = spool::interrupted(&spool_dir(&args.select));
    let (store, outbox, plan) = prepare(&args.select).await?;
    let total = plan.jobs.len() as u64;
    let stop = stop_on_signal();
    // `serve` serves a fleet: it waits for its store as long as it takes, showing why in
    // `status` and the metrics.
    let live = live_report(&args.pages, &store, args.select.tool);
    let concurrency = args.select.store.upload_concurrency;
    let uploads = Uploads::start(&outbox, &store, concurrency, recorder(&live));
    let (coordinator, mut events) = Coordinator::new(
        outbox.clone(),
        limits(&args.select),
        args.lease_timeout,
        plan.jobs,
        &interrupted,
    );
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!(
        "coordinator listening on {}://{}",
        security.scheme(),
        listener.local_addr()?
    );
    let server_stop = CancellationToken::new();
    let server = spawn_server(&coordinator, listener, &security, &server_stop);
    let metrics_server = match (args.metrics_listen, metrics_access) {
        (Some(listen), Some(access)) => {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening on --metrics-listen {listen}"))?;
            eprintln!(
                "metrics at {}://{}/metrics",
                access.scheme(),
                listener.local_addr()?
            );
            let registry = metrics::registry(&coordinator);
            Some(MetricsServer::start(listener, access, registry))
        }
        _ => None,
    };
    let mut progress = Progress::new(total);
    let mut complete = coordinator.completion();
    let mut interrupted = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            Some(event) = events.recv() => progress.on_event(event),
            _ = tick.tick() => progress.on_status(&coordinator.status()),
            Ok(_) = complete.wait_for(|done| *done), if args.exit_when_done => break,
            () = stop.cancelled() => { interrupted = true; break }
        }
    }
    drain_events(&mut events, &mut progress);
    progress.finish();
    if interrupted {
        // Agents are not drained: they keep their running jobs and their results, and reconnect
        // to the next `serve` with this store, which takes them back.
        eprintln!(
            "agents keep running their jobs and reconnect to the next `serve` with this store"
        );
    } else {
        // Every crate has its result: drained agents hang up (and exit); give them a moment
        // to do so before the server goes.
        coordinator.drain().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while coordinator.connected_agents() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop_server(server, &server_stop).await;
    if let Some(metrics_server) = metrics_server {
        metrics_server.stop().await;
    }
    drain_events(&mut events, &mut progress);
    let stored =
        !interrupted && uploads.finish(&outbox, &store, &stop, None).await == Finish::Stored;
    if stored {
        finish_report(live).await;
    }
    eprint!(
        "{}",
        progress::summary(
            progress.finished(),
            progress.elapsed(),
            &store.results_location(args.select.tool)
        )
    );
    if interrupted || !stored {
        unstored_note(&outbox);
        return Ok(exit::INTERRUPTED);
    }
    if coordinator.store_failures() > 0 {
        return Ok(exit::HARNESS_FAILED);
    }
    Ok(if plan.errors.is_empty() {
        exit::OK
    } else {
        exit::INPUT_REFUSED
    })
}

/// The report pages kept current while crates run, unless `--no-report`.
fn live_report(args: &PagesArgs, store: &Store, tool: Tool) -> Option<LiveReport> {
    (!args.no_report).then(|| LiveReport::start(store.clone(), tool, args.report_every))
}

fn recorder(live: &Option<LiveReport>) -> Option<OnStored> {
    live.as_ref().map(LiveReport::recorder)
}

/// The pages' last update, with every stored result.
async fn finish_report(live: Option<LiveReport>) {
    if let Some(live) = live {
        live.finish().await;
    }
}

fn limits(args: &SelectArgs) -> crater_proto::pb::Limits {
    crater_proto::pb::Limits {
        timeout_secs: args.timeout.as_secs().max(1),
        idle_timeout_secs: args.idle_timeout.as_secs().max(1),
        max_log_bytes: args.max_log_bytes,
    }
}

/// Serves `coordinator` on `listener` with `security` (TLS, tokens) until `stop` fires.
fn spawn_server(
    coordinator: &Coordinator,
    listener: TcpListener,
    security: &Security,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    tokio::spawn(
        security
            .server()
            .add_service(coordinator.service())
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            ),
    )
}

/// Stops the gRPC server: gracefully, but for a few seconds at most, so an agent that ignores
/// Drain or stopped reading cannot keep the coordinator from exiting.
async fn stop_server(
    mut server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    stop: &CancellationToken,
) {
    stop.cancel();
    if tokio::time::timeout(Duration::from_secs(5), &mut server)
        .await
        .is_err()
    {
        tracing::warn!("agents still connected after the drain: closing their connections");
        server.abort();
    }
}

/// Cancelled on the first Ctrl-C or SIGTERM.
pub fn stop_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!("cannot listen for SIGTERM: {e}");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("\nstopping: waiting for containers to be removed");
        cancel.cancel();
    });
    token
}
