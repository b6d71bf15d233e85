//! The `crater-agent` command line. (These tests also make cargo build the binary before the
//! coordinator's end-to-end tests run it as a separate process.)

use std::process::Command;

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crater-agent"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_explains_the_options() {
    let out = agent(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for option in [
        "--coordinator",
        "--slots",
        "--memory-gb",
        "--pids-limit",
        "--network",
        "--toolchain",
    ] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
}

#[test]
fn a_bad_coordinator_address_is_refused_at_once() {
    for bad in ["not an address", "ftp://127.0.0.1:7878", "127.0.0.1:7878"] {
        let out = agent(&["--coordinator", bad]);
        assert!(!out.status.success(), "{bad} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("--coordinator {bad}")), "{stderr}");
    }
}

#[test]
fn a_coordinator_off_this_machine_needs_tls_and_a_token() {
    let token = "0123456789abcdef0123456789abcdef";
    let refusals: [(&[&str], Option<&str>, &str); 3] = [
        (
            &["--coordinator", "https://10.0.0.5:7878"],
            None,
            "--token-file",
        ),
        (
            &["--coordinator", "http://10.0.0.5:7878"],
            Some(token),
            "plain http://",
        ),
        (
            &[
                "--coordinator",
                "https://10.0.0.5:7878",
                "--ca-cert",
                "/nonexistent/ca.pem",
            ],
            Some(token),
            "--ca-cert /nonexistent/ca.pem",
        ),
    ];
    for (args, env_token, says) in refusals {
        let mut command = Command::new(env!("CARGO_BIN_EXE_crater-agent"));
        command.args(args).env_remove("CRATER_TOKEN");
        if let Some(token) = env_token {
            command.env("CRATER_TOKEN", token);
        }
        let out = command.output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains(token),
            "{args:?} shows the token: {stderr}"
        );
    }
}
