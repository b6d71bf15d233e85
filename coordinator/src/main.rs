//! `crater-at-home`: see `crater-at-home --help`.

use clap::Parser;
use crater_coordinator::cli::{Cli, Command, ImageCommand, TlsCommand};
use crater_coordinator::{report, run, status, tls};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    crater_proto::raise_open_file_limit();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // aws-config warns about every credential source it tries and skips (instance metadata
        // off EC2, ...); a real failure is reported by the store itself.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,aws_config=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Serve(args) => run::serve(args).await,
        Command::List(args) => run::list(args).await,
        Command::Status(args) => status::status(args).await,
        Command::Report(args) => report::report(args).await,
        Command::Diff(args) => report::diff::diff(args).await,
        Command::Image(command) => image(command).await,
        Command::Tls(TlsCommand::Init(args)) => tls::init(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(run::exit::HARNESS_FAILED)
        }
    }
}

async fn image(command: ImageCommand) -> anyhow::Result<u8> {
    match command {
        ImageCommand::Build { force } => {
            let docker = crater_agent::docker::connect().await?;
            let tag = crater_agent::image::ensure_local_image(&docker, force).await?;
            println!("{tag}");
        }
        ImageCommand::Tag => println!("{}", crater_agent::image::local_image_tags().1),
        ImageCommand::Probe => {
            let config = crater_agent::AgentConfig::new(String::new());
            for (tool, capability) in crater_agent::session::probe(&config).await? {
                match capability {
                    Ok(()) => println!("{tool} ok"),
                    Err(reason) => println!("{tool} missing {reason}"),
                }
            }
        }
    }
    Ok(0)
}
