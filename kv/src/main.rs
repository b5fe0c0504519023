//! `raftwal-kv`: the command line of the example (see the crate documentation).
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use raftwal_kv::{certs, client, server};

#[derive(Parser, Debug)]
#[command(
    name = "raftwal-kv",
    about = "A replicated key-value store on raftwal",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs one node.
    Serve(server::Args),
    /// Makes a development CA and a certificate for each node, in a directory.
    Certs {
        /// Where to write them (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// The node ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<u64>,
    },
    /// Reads a key (linearizable).
    Get {
        key: String,
        #[command(flatten)]
        servers: client::Servers,
    },
    /// Writes a key.
    Set {
        key: String,
        value: String,
        #[command(flatten)]
        servers: client::Servers,
    },
    /// Deletes a key.
    Del {
        key: String,
        #[command(flatten)]
        servers: client::Servers,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            match server::run(&args) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(node = args.id, "{e}; exiting");
                    1
                }
            }
        }
        Command::Certs { dir, nodes } => match certs::write(&dir, &nodes) {
            Ok(()) => {
                println!(
                    "wrote a development CA and certificates for {nodes:?} in {}",
                    dir.display()
                );
                0
            }
            Err(e) => {
                eprintln!("raftwal-kv certs: {e}");
                1
            }
        },
        Command::Get { key, servers } => client::run(&servers, &format!("GET {key}")),
        Command::Set {
            key,
            value,
            servers,
        } => client::run(&servers, &format!("SET {key} {value}")),
        Command::Del { key, servers } => client::run(&servers, &format!("DEL {key}")),
    };
    std::process::exit(code);
}
