//! `crater-at-home status`: what a running coordinator is doing, for people or scripts.

use crate::cli::StatusArgs;
use crate::progress::status_line;
use anyhow::{Context, Result};
use crater_proto::pb;
use std::fmt::Write as _;
use std::time::Duration;

pub async fn status(args: StatusArgs) -> Result<u8> {
    let mut client = pb::coordinator_client::CoordinatorClient::connect(args.coordinator.clone())
        .await
        .with_context(|| format!("cannot reach the coordinator at {}", args.coordinator))?;
    loop {
        let reply = client
            .status(pb::StatusRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("status: {}", s.message()))?
            .into_inner();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&to_json(&reply))?);
            return Ok(0);
        }
        if args.watch {
            print!("\x1b[2J\x1b[H"); // clear the screen, like `watch`
        }
        print!("{}", table(&reply));
        if !args.watch {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

pub fn to_json(r: &pb::StatusReply) -> serde_json::Value {
    let agents: Vec<serde_json::Value> = r
        .agents
        .iter()
        .map(|a| {
            let running: Vec<serde_json::Value> = a
                .running
                .iter()
                .map(|j| {
                    serde_json::json!({
                        "slot": j.slot, "job_id": j.job_id, "crate": j.krate,
                        "version": j.version, "tool": j.tool, "running_secs": j.running_secs,
                    })
                })
                .collect();
            serde_json::json!({
                "name": a.name, "slots": a.slots, "connected_secs": a.connected_secs,
                "running": running,
            })
        })
        .collect();
    serde_json::json!({
        "coordinator_version": r.coordinator_version,
        "uptime_secs": r.uptime_secs,
        "total": r.total,
        "queued": r.queued,
        "running": r.running,
        "finished": r.finished,
        "verdicts": r.verdicts,
        "crates_per_minute": r.crates_per_minute,
        "unstored": r.unstored,
        "unstored_bytes": r.unstored_bytes,
        "store_error": r.store_error,
        "backpressure": r.backpressure,
        "agents": agents,
    })
}

pub fn table(r: &pb::StatusReply) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "coordinator {} · up {}",
        r.coordinator_version,
        humantime::format_duration(Duration::from_secs(r.uptime_secs))
    );
    let _ = writeln!(
        out,
        "crates: {}/{} finished · {}",
        r.finished,
        r.total,
        status_line(r)
    );
    if r.unstored > 0 {
        let _ = writeln!(
            out,
            "store: {} results ({} MiB) wait in the spool{}{}",
            r.unstored,
            r.unstored_bytes >> 20,
            if r.backpressure {
                " · no new work until they are stored"
            } else {
                ""
            },
            if r.store_error.is_empty() {
                String::new()
            } else {
                format!(" · failing: {}", r.store_error)
            }
        );
    }
    if r.agents.is_empty() {
        let _ = writeln!(out, "agents: none connected");
    }
    for agent in &r.agents {
        let _ = writeln!(
            out,
            "agent {} · {} slots · connected {}",
            agent.name,
            agent.slots,
            humantime::format_duration(Duration::from_secs(agent.connected_secs))
        );
        let mut running = agent.running.clone();
        running.sort_by_key(|j| j.slot);
        for slot in 0..agent.slots {
            match running.iter().find(|j| j.slot == slot) {
                Some(j) => {
                    let _ = writeln!(
                        out,
                        "  slot {slot}: {} {} ({}, {}s)",
                        j.krate, j.version, j.tool, j.running_secs
                    );
                }
                None => {
                    let _ = writeln!(out, "  slot {slot}: idle");
                }
            }
        }
    }
    out
}
