//! `serve --metrics-listen`: a real coordinator process scraped over plain HTTP/1.1, as
//! Prometheus would, with and without status tokens. No agents and no Docker: the crate list is
//! empty, so the numbers are the idle coordinator's.

mod common;

use common::{Running, coordinator_bin, free_port, spawn, to_str, wait_until};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

const STATUS_TOKEN: &str = "5a7c0e9d2b4f6a8c1e3d5f7a9b0c2e4d";

/// `GET path` on the loopback `port`, with `authorization: Bearer <token>` if given: the status
/// code and the body, or `None` while nothing answers.
fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let authorization = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n{authorization}\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// `serve` on an empty crate list with metrics on `metrics_port`, and `extra` flags.
fn serve(out: &Path, metrics_port: u16, extra: &[&str]) -> Running {
    let list = out.join("crates.txt");
    std::fs::write(&list, "# nothing to run\n").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{metrics_port}");
    let mut args = vec![
        "serve",
        "--listen",
        &listen,
        "--metrics-listen",
        &metrics,
        "--out",
        to_str(out),
        "--tool",
        "check",
        "--crate-list",
        to_str(&list),
    ];
    args.extend_from_slice(extra);
    spawn(&coordinator_bin(), &args)
}

/// Waits until the metrics listener answers `token` at all; its first answer.
fn first_answer(coordinator: &mut Running, port: u16, token: Option<&str>) -> (u16, String) {
    let mut answer = None;
    wait_until("the metrics listener", Duration::from_secs(60), || {
        assert!(!coordinator.exited(), "serve exited");
        answer = get(port, "/metrics", token);
        answer.is_some()
    });
    answer.unwrap()
}

#[test]
fn metrics_on_loopback_are_open_without_status_tokens() {
    let out = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut coordinator = serve(out.path(), port, &[]);
    let (code, text) = first_answer(&mut coordinator, port, None);
    assert_eq!(code, 200, "{text}");
    for name in [
        "crater_queue_depth",
        "crater_jobs_running",
        "crater_agents_connected",
        "crater_store_backlog_results",
        "crater_store_backlog_bytes",
        "crater_store_failing_seconds",
        "crater_jobs_total",
        "crater_jobs_finished_total",
        "crater_leases_expired_total",
        "crater_leases_released_total",
        "crater_leases_reclaimed_total",
        "crater_results_discarded_total",
        "crater_log_bytes_received_total",
        "crater_assign_wait_seconds",
    ] {
        for kind in ["HELP", "TYPE"] {
            let line = format!("# {kind} {name} ");
            assert!(
                text.lines().any(|l| l.starts_with(&line)),
                "{line}:\n{text}"
            );
        }
    }
    assert!(text.starts_with("# HELP crater_"), "{text}");
    assert!(
        text.lines().any(|l| l == "crater_agents_connected 0"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "crater_jobs_total 0"), "{text}");
    assert!(
        text.contains("crater_assign_wait_seconds_count 0"),
        "{text}"
    );
    let (code, _) = get(port, "/other", None).expect("an answer");
    assert_eq!(code, 404);
}

#[test]
fn with_status_tokens_a_scrape_needs_one() {
    let out = tempfile::tempdir().unwrap();
    let tokens = out.path().join("status-token");
    std::fs::write(&tokens, format!("{STATUS_TOKEN}\n")).unwrap();
    let port = free_port();
    let mut coordinator = serve(out.path(), port, &["--status-token-file", to_str(&tokens)]);
    let (code, body) = first_answer(&mut coordinator, port, None);
    assert_eq!(code, 401, "no token: {body}");
    assert!(body.contains("a status token"), "{body}");
    let wrong = "0000000000000000000000000000000000";
    let (code, body) = get(port, "/metrics", Some(wrong)).expect("an answer");
    assert_eq!(code, 401, "a wrong token: {body}");
    assert!(!body.contains(wrong), "{body}");
    let (code, text) = get(port, "/metrics", Some(STATUS_TOKEN)).expect("an answer");
    assert_eq!(code, 200, "{text}");
    assert!(
        text.lines().any(|l| l == "crater_agents_connected 0"),
        "{text}"
    );
}

#[test]
fn metrics_off_loopback_without_tls_are_refused_at_start() {
    let out = tempfile::tempdir().unwrap();
    let list = out.path().join("crates.txt");
    std::fs::write(&list, "").unwrap();
    let metrics = format!("0.0.0.0:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let finished = common::wait(
        spawn(
            &coordinator_bin(),
            &[
                "serve",
                "--listen",
                &listen,
                "--metrics-listen",
                &metrics,
                "--out",
                to_str(out.path()),
                "--crate-list",
                to_str(&list),
            ],
        ),
        Duration::from_secs(60),
    );
    assert!(!finished.status.success());
    assert!(
        finished.stderr.contains("--metrics-listen") && finished.stderr.contains("--tls-cert"),
        "{}",
        finished.stderr
    );
}

/// Given --tls-cert and --tls-key, the metrics listener serves TLS with them (on loopback too),
/// and a client that trusts the fleet's CA scrapes with the status token.
#[test]
fn with_tls_the_metrics_listener_serves_the_grpc_ports_certificate() {
    let out = tempfile::tempdir().unwrap();
    let fleet = out.path().join("fleet");
    let init = common::wait(
        spawn(
            &coordinator_bin(),
            &[
                "tls",
                "init",
                "--out",
                to_str(&fleet),
                "--host",
                "localhost",
            ],
        ),
        Duration::from_secs(60),
    );
    assert!(init.status.success(), "{}", init.stderr);
    let file = |name: &str| fleet.join(name).to_str().unwrap().to_owned();
    let port = free_port();
    let mut coordinator = serve(
        out.path(),
        port,
        &[
            "--tls-cert",
            &file("server.pem"),
            "--tls-key",
            &file("server-key.pem"),
            "--agent-token-file",
            &file("agent-token"),
            "--status-token-file",
            &file("status-token"),
        ],
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(file("ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // The token file's last line (comments come first).
    let token = std::fs::read_to_string(file("status-token")).unwrap();
    let token = token.lines().last().unwrap().to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let scrape = |token: Option<&str>| {
        let mut request = client.get(format!("https://127.0.0.1:{port}/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        runtime.block_on(async {
            let response = request.send().await.ok()?;
            let code = response.status().as_u16();
            Some((code, response.text().await.ok()?))
        })
    };
    let mut answer = None;
    wait_until("the TLS metrics listener", Duration::from_secs(60), || {
        assert!(!coordinator.exited(), "serve exited");
        answer = scrape(Some(&token));
        answer.is_some()
    });
    let (code, text) = answer.unwrap();
    assert_eq!(code, 200, "{text}");
    assert!(
        text.lines().any(|l| l == "crater_agents_connected 0"),
        "{text}"
    );
    assert_eq!(scrape(None).expect("an answer").0, 401);
    assert!(
        get(port, "/metrics", Some(&token)).is_none_or(|(code, _)| code != 200),
        "plain HTTP on the TLS listener"
    );
}
