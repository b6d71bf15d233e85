//! `crater-at-home tls init`: everything a fleet needs to talk safely, in one folder.
//!
//! A fresh CA, a server certificate it signs for every `--host` (plus `localhost` and
//! `127.0.0.1`, so the coordinator's own machine can reach it by those too), and two random
//! tokens: one for agents, one for `status`. The CA's private key is used once and never written:
//! nobody, including whoever copies `ca.pem` around, can sign another certificate the agents
//! would trust. Adding a host means running this again (`--force`) and handing out the new files.
//!
//! Private files (the server key, the tokens) are created with mode 0600; existing files are
//! never overwritten without `--force`, and then all of them are replaced together.

use crate::cli::TlsInitArgs;
use anyhow::{Context, Result, bail};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// The files `tls init` writes, by name in `--out`.
pub const CA_CERT: &str = "ca.pem";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server-key.pem";
pub const AGENT_TOKEN: &str = "agent-token";
pub const STATUS_TOKEN: &str = "status-token";

/// How long the certificates are valid. Long, because renewing means handing new files to every
/// agent; the CA signs nothing else, and its key is gone.
const VALID_FOR: Duration = Duration::days(10 * 365);

/// Random bytes in a token (64 hex characters).
const TOKEN_BYTES: usize = 32;

/// One file to write: its name, its content, whether only its owner may read it, what it is for.
struct Output {
    name: &'static str,
    content: String,
    private: bool,
    purpose: &'static str,
}

pub fn init(args: TlsInitArgs) -> Result<u8> {
    let hosts = server_names(&args.host)?;
    let outputs = make_outputs(&hosts)?;
    if !args.force {
        let existing: Vec<String> = outputs
            .iter()
            .map(|o| args.out.join(o.name))
            .filter(|p| p.symlink_metadata().is_ok())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist{}: give --force to replace them (every agent then needs the \
                 new ca.pem and agent token)",
                existing.join(", "),
                if existing.len() == 1 { "s" } else { "" }
            );
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for output in &outputs {
        write_file(&args.out.join(output.name), &output.content, output.private)?;
    }
    let hosts_text: Vec<String> = hosts.iter().map(san_text).collect();
    println!(
        "certificates and tokens in {} (server certificate for {})",
        args.out.display(),
        hosts_text.join(", ")
    );
    for output in &outputs {
        let mode = if output.private { "0600" } else { "0644" };
        println!("  {:<15} {mode}  {}", output.name, output.purpose);
    }
    println!(
        "The CA's private key was not kept: to add a host, run this again with --force and hand \
         out the new files."
    );
    Ok(0)
}

/// The server certificate's names: every `--host` (a DNS name or an IP address), then
/// `localhost` and `127.0.0.1`, each once.
fn server_names(hosts: &[String]) -> Result<Vec<SanType>> {
    let mut names = Vec::new();
    let loopback = ["localhost".to_owned(), Ipv4Addr::LOCALHOST.to_string()];
    for host in hosts.iter().chain(&loopback) {
        let host = host.trim();
        let name = match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                check_dns_name(host)?;
                SanType::DnsName(
                    host.to_ascii_lowercase()
                        .try_into()
                        .context("not a DNS name")?,
                )
            }
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// A DNS name a certificate can carry: dot-separated labels of letters, digits and inner
/// hyphens, optionally `*.` first. Catches a URL or `host:port` given by mistake.
fn check_dns_name(host: &str) -> Result<()> {
    let bare = host.strip_prefix("*.").unwrap_or(host);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(label_ok) {
        bail!(
            "--host {host}: give a DNS name (coord.example.internal) or an IP address (10.0.0.5), \
             without a scheme or port"
        );
    }
    Ok(())
}

fn san_text(name: &SanType) -> String {
    match name {
        SanType::DnsName(dns) => dns.as_str().to_owned(),
        SanType::IpAddress(ip) => ip.to_string(),
        other => format!("{other:?}"),
    }
}

/// The CA, the server's certificate and key, and the two tokens, in memory.
fn make_outputs(hosts: &[SanType]) -> Result<Vec<Output>> {
    let not_before = OffsetDateTime::now_utc() - Duration::days(1); // some clock skew
    let not_after = not_before + VALID_FOR;
    let first_host = hosts.first().map(san_text).unwrap_or_default();

    let ca_key = KeyPair::generate().context("making the CA's key")?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = name(&format!("crater-at-home fleet CA ({first_host})"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key).context("signing the CA")?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().context("making the server's key")?;
    let mut server = CertificateParams::default();
    server.distinguished_name = name(&first_host);
    server.subject_alt_names = hosts.to_vec();
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = not_before;
    server.not_after = not_after;
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .context("signing the server certificate")?;

    Ok(vec![
        Output {
            name: CA_CERT,
            content: ca_cert.pem(),
            private: false,
            purpose: "the CA: agents and status trust it (--ca-cert)",
        },
        Output {
            name: SERVER_CERT,
            content: server_cert.pem(),
            private: false,
            purpose: "the coordinator's certificate (serve --tls-cert)",
        },
        Output {
            name: SERVER_KEY,
            content: server_key.serialize_pem(),
            private: true,
            purpose: "its private key: only on the coordinator (serve --tls-key)",
        },
        Output {
            name: AGENT_TOKEN,
            content: token_file(
                "agent",
                "crater-agent --token-file, serve --agent-token-file",
            ),
            private: true,
            purpose: "for agents (crater-agent --token-file, serve --agent-token-file)",
        },
        Output {
            name: STATUS_TOKEN,
            content: token_file("status", "status --token-file, serve --status-token-file"),
            private: true,
            purpose: "for status (status --token-file, serve --status-token-file)",
        },
    ])
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// A token file with one fresh token: 32 bytes from the thread's CSPRNG (seeded by the OS), hex.
fn token_file(kind: &str, used_by: &str) -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "# crater-at-home {kind} token ({used_by}).\n\
         # One token a line; a coordinator accepts every token in its file (add a new one, move\n\
         # the clients over, remove the old one); a client sends the first.\n\
         {}\n",
        hex::encode(bytes)
    )
}

/// Writes `content` to a new file at `path` (replacing an old one), mode 0600 when `private`,
/// so a secret is never readable by others, not even for a moment.
fn write_file(path: &Path, content: &str, private: bool) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("replacing {}", path.display())),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_include_loopback_once_and_refuse_urls() {
        let names = server_names(&["Coord.Example.Internal".into(), "10.0.0.5".into()]).unwrap();
        let texts: Vec<String> = names.iter().map(san_text).collect();
        assert_eq!(
            texts,
            [
                "coord.example.internal",
                "10.0.0.5",
                "localhost",
                "127.0.0.1"
            ]
        );
        let names = server_names(&["localhost".into(), "[::1]".into()]).unwrap();
        assert_eq!(names.len(), 3);
        for bad in ["https://coord", "coord:7878", "", "-x.example", "a..b"] {
            assert!(server_names(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_files_hold_one_fresh_token() {
        let one = crater_proto::auth::parse_tokens(&token_file("agent", "x")).unwrap();
        let two = crater_proto::auth::parse_tokens(&token_file("agent", "x")).unwrap();
        assert_eq!((one.len(), two.len()), (1, 1));
        let first = token_file("agent", "x");
        let token = first.lines().last().unwrap();
        assert_eq!(token.len(), 2 * TOKEN_BYTES);
        assert!(!crater_proto::auth::matches_any(token.as_bytes(), &two));
    }
}
