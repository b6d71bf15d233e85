//! Fleet transport end to end: `tls init` makes the files, `serve` listens with TLS and tokens on
//! an address of this machine that is not loopback, and `status` gets in only with the CA and a
//! status token. No agent and no worker image are needed: `status` exercises the same TLS and
//! the same token check as an agent's `Work` stream.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const QUICK: Duration = Duration::from_secs(60);

/// `crater-at-home ARGS` to the end, with extra environment variables.
fn crater(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    wait(spawn_with_env(&coordinator_bin(), args, &env), QUICK)
}

/// An IPv4 address of this machine that is not loopback: docker0's bridge when there is one.
fn non_loopback_ipv4() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("running `ip -4 -o addr show`");
    let text = String::from_utf8_lossy(&out.stdout);
    // "3: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0"
    let addresses: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let interface = words.nth(1)?.to_owned();
            let address = words.skip_while(|w| *w != "inet").nth(1)?;
            Some((interface, address.split('/').next()?.to_owned()))
        })
        .filter(|(_, address)| !address.starts_with("127."))
        .collect();
    addresses
        .iter()
        .find(|(interface, _)| interface == "docker0")
        .or(addresses.first())
        .map(|(_, address)| address.clone())
        .unwrap_or_else(|| panic!("no non-loopback IPv4 address on this machine:\n{text}"))
}

/// The token in a token file `tls init` wrote (its last line).
fn token_in(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned()
}

/// Waits until something accepts TCP connections at `address`.
fn wait_for_listener(address: &str, server: &str) {
    wait_until(&format!("{server} to listen on {address}"), QUICK, || {
        std::net::TcpStream::connect(address).is_ok()
    });
}

fn assert_failed_saying(finished: &Finished, what: &str, words: &[&str]) {
    assert!(
        !finished.status.success(),
        "{what}: should have failed; stdout:\n{}",
        finished.stdout
    );
    for word in words {
        assert!(
            finished.stderr.contains(word),
            "{what}: stderr should say `{word}`:\n{}",
            finished.stderr
        );
    }
}

/// Stops a coordinator the way an operator does (SIGTERM) and returns what it printed.
fn stop(server: Running) -> Finished {
    let pid = server.id().to_string();
    assert!(Command::new("kill").arg(&pid).status().unwrap().success());
    wait(server, QUICK)
}

#[test]
fn tls_init_writes_a_ca_a_server_certificate_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet");
    let init = crater(
        &[
            "tls",
            "init",
            "--out",
            to_str(&fleet),
            "--host",
            "coord.example.internal",
            "--host",
            "10.0.0.5",
        ],
        &[],
    );
    assert!(init.status.success(), "{}", init.stderr);

    let mut names: Vec<String> = std::fs::read_dir(&fleet)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // Exactly these: the CA's key is not kept anywhere.
    assert_eq!(
        names,
        [
            "agent-token",
            "ca.pem",
            "server-key.pem",
            "server.pem",
            "status-token"
        ]
    );
    for private in ["server-key.pem", "agent-token", "status-token"] {
        let mode = std::fs::metadata(fleet.join(private))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{private}: mode {mode:o}");
    }
    let agent_token = token_in(&fleet.join("agent-token"));
    let status_token = token_in(&fleet.join("status-token"));
    for token in [&agent_token, &status_token] {
        assert_eq!(token.len(), 64, "32 random bytes in hex: {token}");
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    }
    assert_ne!(agent_token, status_token);

    // The server certificate names every host, and localhost and 127.0.0.1, and the CA signed it.
    if Command::new("openssl").arg("version").output().is_ok() {
        let server_pem = fleet.join("server.pem");
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(&server_pem)
            .output()
            .unwrap();
        let sans = String::from_utf8_lossy(&out.stdout);
        for name in [
            "DNS:coord.example.internal",
            "IP Address:10.0.0.5",
            "DNS:localhost",
            "IP Address:127.0.0.1",
        ] {
            assert!(sans.contains(name), "{name} missing from:\n{sans}");
        }
        let verify = Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(fleet.join("ca.pem"))
            .arg(&server_pem)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
    } else {
        eprintln!("openssl is not installed: the SANs are checked by the TLS test only");
    }

    // Existing files are kept unless --force.
    let again = crater(
        &["tls", "init", "--out", to_str(&fleet), "--host", "other"],
        &[],
    );
    assert_failed_saying(
        &again,
        "tls init over existing files",
        &["already exist", "--force"],
    );
    assert_eq!(token_in(&fleet.join("agent-token")), agent_token);
    let forced = crater(
        &[
            "tls",
            "init",
            "--out",
            to_str(&fleet),
            "--host",
            "other",
            "--force",
        ],
        &[],
    );
    assert!(forced.status.success(), "{}", forced.stderr);
    assert_ne!(token_in(&fleet.join("agent-token")), agent_token);
    let mode = std::fs::metadata(fleet.join("agent-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let bad_host = crater(
        &[
            "tls",
            "init",
            "--out",
            to_str(&dir.path().join("bad")),
            "--host",
            "https://coord:7878",
        ],
        &[],
    );
    assert_failed_saying(&bad_host, "tls init with a URL as host", &["--host"]);
}

#[test]
fn a_fleet_coordinator_admits_status_only_over_tls_with_a_status_token() {
    let ip = non_loopback_ipv4();
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet");
    let other_fleet = dir.path().join("other-fleet");
    for (out, host) in [(&fleet, ip.as_str()), (&other_fleet, ip.as_str())] {
        let init = crater(
            &[
                "tls",
                "init",
                "--out",
                to_str(out),
                "--host",
                host,
                "--host",
                "coord.example.internal",
            ],
            &[],
        );
        assert!(init.status.success(), "{}", init.stderr);
    }
    let crate_list = dir.path().join("crates.txt");
    std::fs::write(&crate_list, "# nothing to run\n").unwrap();
    let file = |name: &str| fleet.join(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (file("server.pem"), file("server-key.pem"), file("ca.pem"));
    let (agent_token_file, status_token_file) = (file("agent-token"), file("status-token"));
    let agent_token = token_in(Path::new(&agent_token_file));
    let status_token = token_in(Path::new(&status_token_file));

    // Off loopback, serve refuses to start without TLS or agent tokens, naming what is missing.
    let refused_listen = format!("{ip}:{}", free_port());
    let common_serve = |listen: &str, out: &str| -> Vec<String> {
        [
            "serve",
            "--listen",
            listen,
            "--crate-list",
            to_str(&crate_list),
            "--out",
            out,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let args = common_serve(&refused_listen, to_str(&dir.path().join("out-refused")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bare = crater(&args, &[]);
    assert_failed_saying(
        &bare,
        "serve off loopback without TLS or tokens",
        &["not a loopback address", "--tls-cert", "--agent-token-file"],
    );
    let mut with_tls = args.clone();
    with_tls.extend(["--tls-cert", &cert, "--tls-key", &key]);
    let no_tokens = crater(&with_tls, &[]);
    assert_failed_saying(
        &no_tokens,
        "serve off loopback without agent tokens",
        &["--agent-token-file"],
    );
    assert!(
        !no_tokens.stderr.contains("--tls-cert"),
        "{}",
        no_tokens.stderr
    );
    let mut no_tls = args.clone();
    no_tls.extend(["--agent-token-file", &agent_token_file]);
    let no_tls = crater(&no_tls, &[]);
    assert_failed_saying(&no_tls, "serve off loopback without TLS", &["--tls-cert"]);
    assert!(
        !no_tls.stderr.contains("--agent-token-file"),
        "{}",
        no_tls.stderr
    );

    // The fleet coordinator, on the non-loopback address.
    let listen = format!("{ip}:{}", free_port());
    let mut args = common_serve(&listen, to_str(&dir.path().join("out")));
    args.extend(
        [
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--agent-token-file",
            &agent_token_file,
            "--status-token-file",
            &status_token_file,
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = spawn(&coordinator_bin(), &args);
    // The same, on loopback (TLS; token files too): a client may call it without a token, so the
    // server's own refusal of a missing token shows, and plain http can reach its TLS port.
    let loopback_listen = format!("127.0.0.1:{}", free_port());
    let mut args = common_serve(&loopback_listen, to_str(&dir.path().join("out-loopback")));
    args.extend(
        [
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--agent-token-file",
            &agent_token_file,
            "--status-token-file",
            &status_token_file,
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let loopback_server = spawn(&coordinator_bin(), &args);
    wait_for_listener(&listen, "the fleet coordinator");
    wait_for_listener(&loopback_listen, "the loopback coordinator");

    let url = format!("https://{listen}");
    let status = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["status", "--json"];
        args.extend(extra);
        crater(&args, env)
    };

    // The CA and a status token: in.
    let ok = status(
        &[
            "--coordinator",
            &url,
            "--ca-cert",
            &ca,
            "--token-file",
            &status_token_file,
        ],
        &[],
    );
    assert!(ok.status.success(), "{}", ok.stderr);
    let json: serde_json::Value = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(json["total"], 0, "{json}");
    assert_eq!(json["agents"], serde_json::json!([]), "{json}");
    // The token from the environment instead of a file.
    let from_env = status(
        &["--coordinator", &url, "--ca-cert", &ca],
        &[("CRATER_TOKEN", &status_token)],
    );
    assert!(from_env.status.success(), "{}", from_env.stderr);
    // By name too (the certificate names coord.example.internal; it resolves here only if
    // /etc/hosts says so, so only the IP is asked).

    // An agent token does not admit status.
    let agent_for_status = status(
        &[
            "--coordinator",
            &url,
            "--ca-cert",
            &ca,
            "--token-file",
            &agent_token_file,
        ],
        &[],
    );
    assert_failed_saying(
        &agent_for_status,
        "status with an agent token",
        &["this call needs a status token"],
    );
    // A wrong token.
    let wrong = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let wrong_token = status(
        &["--coordinator", &url, "--ca-cert", &ca],
        &[("CRATER_TOKEN", wrong)],
    );
    assert_failed_saying(
        &wrong_token,
        "status with a wrong token",
        &["this call needs a status token", "not one of"],
    );
    // No token: the client refuses to go off this machine without one...
    let no_token = status(&["--coordinator", &url, "--ca-cert", &ca], &[]);
    assert_failed_saying(
        &no_token,
        "status off loopback without a token",
        &["--token-file", "CRATER_TOKEN"],
    );
    // ...and a coordinator with token files refuses a call without one, even on loopback.
    let loopback_url = format!("https://{loopback_listen}");
    let no_token = status(&["--coordinator", &loopback_url, "--ca-cert", &ca], &[]);
    assert_failed_saying(
        &no_token,
        "status to loopback without a token",
        &["this call needs a status token", "none was sent"],
    );
    let ok = status(
        &[
            "--coordinator",
            &loopback_url,
            "--ca-cert",
            &ca,
            "--token-file",
            &status_token_file,
        ],
        &[],
    );
    assert!(ok.status.success(), "{}", ok.stderr);

    // Plain http: refused by the client off loopback, and a clear error against a TLS port.
    let plain = status(
        &[
            "--coordinator",
            &format!("http://{listen}"),
            "--token-file",
            &status_token_file,
        ],
        &[],
    );
    assert_failed_saying(
        &plain,
        "plain http off loopback",
        &["plain http://", "https://"],
    );
    let plain = status(
        &[
            "--coordinator",
            &format!("http://{loopback_listen}"),
            "--token-file",
            &status_token_file,
        ],
        &[],
    );
    assert_failed_saying(
        &plain,
        "plain http to a TLS port",
        &["if the coordinator serves TLS, use https://"],
    );

    // Another fleet's CA does not vouch for this coordinator; neither do the system's roots alone.
    let other_ca = other_fleet.join("ca.pem");
    let foreign = status(
        &[
            "--coordinator",
            &url,
            "--ca-cert",
            to_str(&other_ca),
            "--token-file",
            &status_token_file,
        ],
        &[],
    );
    assert_failed_saying(
        &foreign,
        "status trusting another fleet's CA",
        &["certificate"],
    );
    let no_ca = status(
        &["--coordinator", &url, "--token-file", &status_token_file],
        &[],
    );
    assert_failed_saying(&no_ca, "status without the fleet's CA", &["certificate"]);

    // No token ever shows: not in a client's error, not in the coordinator's log.
    let server_output = stop(server);
    let loopback_output = stop(loopback_server);
    for (what, text) in [
        ("agent-token status", &agent_for_status.stderr),
        ("wrong-token status", &wrong_token.stderr),
        ("the fleet coordinator", &server_output.stderr),
        ("the loopback coordinator", &loopback_output.stderr),
    ] {
        for token in [&agent_token, &status_token, &wrong.to_owned()] {
            assert!(
                !text.contains(token.as_str()),
                "{what} shows a token:\n{text}"
            );
        }
    }
    assert!(
        server_output
            .stderr
            .contains(&format!("listening on https://{listen}")),
        "{}",
        server_output.stderr
    );
}
