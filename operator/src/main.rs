//! `quiver-operator`: the binary. Parses flags and env into plain structs,
//! then either prints the CRD (`crd`) or runs the controller (`run`).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use quiver_operator::controller::Settings;
use quiver_operator::leader::LeaseConfig;
use quiver_operator::run::{run, RunConfig};
use quiver_operator::{crd, render};

/// Kubernetes operator for Quiver.
#[derive(Parser, Debug)]
#[command(name = "quiver-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the DistributedDatabase CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller.
    Run(RunArgs),
    /// Print the objects the operator would apply for a DistributedDatabase
    /// YAML file (what the container end-to-end test runs), without a cluster.
    Render(RenderArgs),
}

#[derive(clap::Args, Debug)]
struct RenderArgs {
    /// A DistributedDatabase manifest, e.g. manifests/minimal.yaml.
    #[arg(short = 'f', long = "file")]
    file: std::path::PathBuf,
    /// Namespace to assume when the manifest sets none.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Superuser password for the generated Secret (random when absent).
    #[arg(long, env = "QUIVER_PASSWORD")]
    password: Option<String>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "QUIVER_OPERATOR_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Disable leader election (only safe with a single replica).
    #[arg(long, env = "QUIVER_OPERATOR_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "QUIVER_OPERATOR_LEASE_NAME",
        default_value = "quiver-operator"
    )]
    lease_name: String,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease (its pod name).
    #[arg(long, env = "POD_NAME", default_value = "quiver-operator")]
    identity: String,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "QUIVER_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("quiver-operator: cannot render the CRD: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => run_controller(args),
        Command::Render(args) => match render(&args) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("quiver-operator: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

fn render(args: &RenderArgs) -> Result<String, String> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let db: crd::DistributedDatabase = serde_saphyr::from_str(&text)
        .map_err(|e| format!("{} is not a DistributedDatabase: {e}", args.file.display()))?;
    let password = args
        .password
        .clone()
        .unwrap_or_else(quiver_operator::controller::generate_password);
    render::render_objects(db, &args.namespace, &password).map_err(|e| e.to_string())
}

fn run_controller(args: RunArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let lease_duration = Duration::from_secs(args.lease_seconds.max(2));
    let config = RunConfig {
        watch_namespace: args.watch_namespace,
        lease: (!args.no_leader_election).then(|| LeaseConfig {
            namespace: args.lease_namespace,
            name: args.lease_name,
            identity: args.identity,
            lease_duration,
            renew_every: lease_duration / 3,
        }),
        settings: Settings::default(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("quiver-operator: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("quiver-operator: {err}");
            ExitCode::FAILURE
        }
    }
}
