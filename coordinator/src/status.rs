//! `crater-at-home status`: what a running coordinator is doing, for people or scripts.

use crate::cli::StatusArgs;
use crate::progress::status_line;
use anyhow::Result;
use crater_proto::text::printable;
use crater_proto::{client, pb};
use std::fmt::Write as _;
use std::time::Duration;

pub async fn status(args: StatusArgs) -> Result<u8> {
    let token = args.auth.token()?;
    let endpoint = client::endpoint(
        &args.coordinator,
        args.auth.ca_cert.as_deref(),
        token.as_ref(),
    )?
    .connect_timeout(Duration::from_secs(10));
    // Plain http to a TLS port fails with no more than "connection closed": say what may be
    // wrong.
    let hint = if args.coordinator.starts_with("http://") {
        " (if the coordinator serves TLS, use https:// and --ca-cert)"
    } else {
        ""
    };
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the coordinator at {}: {}{hint}",
            args.coordinator,
            client::chain(&e)
        )
    })?;
    let mut client = client::client(channel, token.as_ref());
    loop {
        let reply = client
            .status(pb::StatusRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("status: {}{hint}", client::chain(&s)))?
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
                        "log_bytes": j.log_bytes,
                    })
                })
                .collect();
            serde_json::json!({
                "name": a.name, "slots": a.slots, "connected_secs": a.connected_secs,
                "last_contact_secs": a.last_contact_secs, "lost": a.lost, "running": running,
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
        "eta_secs": r.eta_secs,
        "leases_expired": r.leases_expired,
        "results_discarded": r.results_discarded,
        "leases_reclaimed": r.leases_reclaimed,
        "lease_timeout_secs": r.lease_timeout_secs,
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
    if r.eta_secs > 0 {
        let _ = writeln!(
            out,
            "eta: {} at {:.1} crates a minute",
            humantime::format_duration(Duration::from_secs(r.eta_secs)),
            r.crates_per_minute
        );
    }
    if r.leases_expired > 0 || r.results_discarded > 0 || r.leases_reclaimed > 0 {
        let _ = writeln!(
            out,
            "leases: {} taken from silent agents · {} reclaimed by agents that came back · {} \
             late results discarded",
            r.leases_expired, r.leases_reclaimed, r.results_discarded
        );
    }
    for agent in &r.agents {
        // What the coordinator relays came from agents: shown printable whatever it holds.
        let name = printable(&agent.name, 64);
        if agent.lost {
            let left = r.lease_timeout_secs.saturating_sub(agent.last_contact_secs);
            let _ = writeln!(
                out,
                "agent {name} · LOST {}s ago · its {} jobs go to others in {left}s unless it \
                 is back",
                agent.last_contact_secs,
                agent.running.len()
            );
        } else {
            let _ = writeln!(
                out,
                "agent {name} · {} slots · connected {} · last heard {}s ago",
                agent.slots,
                humantime::format_duration(Duration::from_secs(agent.connected_secs)),
                agent.last_contact_secs
            );
        }
        let mut running = agent.running.clone();
        running.sort_by_key(|j| j.slot);
        for j in &running {
            let _ = writeln!(
                out,
                "  slot {}: {} {} ({}, {}s, {} KiB of log)",
                j.slot,
                printable(&j.krate, 64),
                printable(&j.version, 32),
                printable(&j.tool, 16),
                j.running_secs,
                j.log_bytes >> 10
            );
        }
        let idle = u64::from(agent.slots).saturating_sub(running.len() as u64);
        if idle > 0 {
            let _ = writeln!(out, "  {idle} slots idle");
        }
    }
    out
}
