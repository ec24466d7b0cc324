//! `kubectl azora`: the Azora control plane as on-call engineers meet it. Read commands (`status`,
//! `timeline`) print one screen, or a stable JSON/YAML document for automation (`-o json|yaml`). Actions
//! are declarative changes of the custom resources that the operator carries out (never a side channel);
//! `--wait` follows the operator's status until it reports the action done, and fails with its reason when
//! it reports it cannot be.
//!
//! Exit codes: 0 done; 1 error or timeout; 2 the operator reports the action cannot be carried out.

mod act;
mod client;
mod render;
mod view;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit code: the operator reports the action cannot be carried out.
pub const EXIT_REFUSED: u8 = 2;

#[derive(Parser)]
#[command(
    name = "kubectl-azora",
    bin_name = "kubectl azora",
    version,
    about = "Inspect and steer the Azora multi-region control plane.",
    after_help = "Examples:
  kubectl azora status                          regions, policies, tenants, backups, secrets, chaos, drills
  kubectl azora status -o json | jq .regions    the same as a stable JSON document
  kubectl azora timeline global-api             the failover history of a policy
  kubectl azora cordon africa --wait            take africa out of rotation, wait until nothing is sent there
  kubectl azora failover global-api --to asia --wait
  kubectl azora failover global-api --clear --wait
  kubectl azora approve-failback global-api africa --wait
  kubectl azora rotate acme --wait              rotate every secret of tenant acme now
  kubectl azora backup acme --wait              back tenant acme up now
  kubectl azora restore <backup> --to europe --namespace acme-check --wait

Exit codes: 0 done, 1 error or timeout, 2 the operator reports the action cannot be carried out."
)]
struct Cli {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: Command,
}

/// How to reach the API server, as kubectl does.
#[derive(Args, Clone, Debug, Default)]
pub struct Connection {
    /// Path to the kubeconfig file (default: the files $KUBECONFIG lists, merged as kubectl does, then
    /// ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Colour: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, default_value_t = Colour::Auto)]
    pub color: Colour,
}

/// When to colour the output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Colour {
    /// On a terminal, unless NO_COLOR is set.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Output format of read commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables for people.
    #[default]
    Table,
    /// A stable JSON document (see plugins/README.md).
    Json,
    /// The same document as YAML.
    Yaml,
}

/// `--wait` and its timeout.
#[derive(Args, Clone, Copy, Debug)]
pub struct Wait {
    /// Wait until the operator reports the action done (exit 0), or that it cannot be (exit 2).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 90s or 5m.
    #[arg(long, default_value = "2m", value_parser = parse_timeout)]
    pub timeout: Duration,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s}: expected e.g. 90s, 5m or 1h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s}: expected e.g. 90s, 5m or 1h")),
    }
}

#[derive(Subcommand)]
enum Command {
    /// One screen: regions, policies, tenants, backups, secrets, chaos and drills.
    #[command(after_help = "Examples:
  kubectl azora status
  kubectl azora status -o json
  kubectl azora status --context prod-hub --color never")]
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The failover timeline and history of a FailoverPolicy, newest first.
    #[command(after_help = "Examples:
  kubectl azora timeline global-api
  kubectl azora timeline global-api -o json | jq '.failovers[0].totalMs'")]
    Timeline {
        /// The FailoverPolicy.
        policy: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Take a region out of rotation (spec.cordoned): no DNS answers, never a failover target.
    #[command(after_help = "Examples:
  kubectl azora cordon africa
  kubectl azora cordon africa --wait --timeout 60s")]
    Cordon {
        /// The Region.
        region: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Put a cordoned region back into rotation.
    #[command(after_help = "Examples:
  kubectl azora uncordon africa --wait")]
    Uncordon {
        /// The Region.
        region: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// A manual failover (spec.manual): every answer of the policy goes to one region, recorded with who
    /// asked, until --clear hands traffic back to the policy's rules.
    #[command(after_help = "Examples:
  kubectl azora failover global-api --to europe --reason 'INC-4711: Lagos fibre cut' --wait
  kubectl azora failover global-api --clear --wait")]
    Failover {
        /// The FailoverPolicy.
        policy: String,
        /// The region every answer goes to.
        #[arg(long, required_unless_present = "clear", conflicts_with = "clear")]
        to: Option<String>,
        /// Withdraw the manual failover: the policy's rules answer again.
        #[arg(long)]
        clear: bool,
        /// Why (recorded in the policy; e.g. a ticket).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Approve traffic returning to a recovered region (spec.failback.approvedRegion): the only way back
    /// with `failback.mode: Manual`, and a skip of the hold-down with `Automatic`.
    #[command(after_help = "Examples:
  kubectl azora approve-failback global-api africa --wait")]
    ApproveFailback {
        /// The FailoverPolicy.
        policy: String,
        /// The recovered region traffic may return to.
        region: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Back a tenant up now: a Backup with the settings (included kinds, encryption key) of its schedule.
    #[command(after_help = "Examples:
  kubectl azora backup acme --wait
  kubectl azora backup acme --schedule platform --wait --timeout 10m")]
    Backup {
        /// The Tenant.
        tenant: String,
        /// The BackupSchedule whose settings the backup takes (needed when there are several).
        #[arg(long)]
        schedule: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Restore a Backup into a region: the tenant's own namespace, or a scratch namespace (--namespace).
    #[command(after_help = "Examples:
  kubectl azora restore acme-manual-20261130-220000 --to europe --namespace acme-check --wait
  kubectl get backups    # the backups there are")]
    Restore {
        /// The Backup.
        backup: String,
        /// The region restored into (its own copy of the backup is read).
        #[arg(long)]
        to: String,
        /// A scratch namespace to restore into instead of the tenant's own.
        #[arg(long)]
        namespace: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// DR drills: run one now (annotation azora.io/run-now) and, with --wait, its result and numbers.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// Chaos experiments: run one now, or pause/resume all of them (the kill switch: ConfigMap
    /// azora-chaos-halt in the operator's namespace reverts every active fault and blocks new runs).
    #[command(subcommand)]
    Chaos(ChaosCommand),
    /// Rotate every secret of a tenant now (annotation azora.io/rotate-now), or one (<tenant>/<secret>:
    /// annotation azora.io/rotate-now.<secret>).
    #[command(after_help = "Examples:
  kubectl azora rotate acme --wait --timeout 5m
  kubectl azora rotate acme/db --wait
  kubectl azora rotate acme/db --leaked --wait")]
    Rotate {
        /// The Tenant, or <tenant>/<secret>.
        tenant: String,
        /// The current value leaked: no grace period (the old value leaves the target Secrets at once),
        /// every older version destroyed in every region's Vault, never rolled back to.
        #[arg(long)]
        leaked: bool,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Subcommand)]
enum DrillCommand {
    /// Run a DrDrill now; --wait exits 0 when it passes, 2 with the reason when it fails, aborts or is
    /// skipped.
    #[command(after_help = "Examples:
  kubectl azora drill run monthly-lose-africa --wait --timeout 30m")]
    Run {
        /// The DrDrill.
        drill: String,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Subcommand)]
enum ChaosCommand {
    /// Run a ChaosExperiment now; --wait exits 0 when it succeeds, 2 with the reason otherwise.
    #[command(after_help = "Examples:
  kubectl azora chaos run daily-africa-outage --wait --timeout 10m")]
    Run {
        /// The ChaosExperiment.
        experiment: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Halt all chaos: every active fault is reverted and no experiment or drill starts until resumed.
    #[command(after_help = "Examples:
  kubectl azora chaos pause --reason 'INC-4711' -n azora-system")]
    Pause {
        /// Why (shown in every skipped or aborted run).
        #[arg(long)]
        reason: String,
        /// The operator's namespace (default: the context's).
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Lift the halt.
    #[command(after_help = "Examples:
  kubectl azora chaos resume -n azora-system")]
    Resume {
        /// The operator's namespace (default: the context's).
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Two workers: a blocking credential plugin or kubeconfig read never stops the deadlines from firing.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = client::connect(&cli.conn).await?;
    let colour = render::Palette::new(cli.conn.color);
    match cli.command {
        Command::Status { output } => {
            let s = view::status(&client).await?;
            render::emit(output, &s, || render::status(&s, &colour))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Timeline { policy, output } => {
            let t = view::timeline(&client, &policy).await?;
            render::emit(output, &t, || render::timeline(&t, &colour))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cordon { region, wait } => act::cordon(&client, &region, true, wait).await,
        Command::Uncordon { region, wait } => act::cordon(&client, &region, false, wait).await,
        Command::Failover {
            policy,
            to,
            clear: _,
            reason,
            wait,
        } => act::failover(&client, &policy, to.as_deref(), reason, wait).await,
        Command::ApproveFailback { policy, region, wait } => {
            act::approve_failback(&client, &policy, &region, wait).await
        }
        Command::Rotate { tenant, leaked, wait } => act::rotate(&client, &tenant, leaked, wait).await,
        Command::Drill(DrillCommand::Run { drill, wait }) => act::drill_run(&client, &drill, wait).await,
        Command::Chaos(ChaosCommand::Run { experiment, wait }) => {
            act::chaos_run(&client, &experiment, wait).await
        }
        Command::Chaos(ChaosCommand::Pause { reason, namespace }) => {
            act::chaos_pause(&client, namespace.as_deref(), &reason).await
        }
        Command::Chaos(ChaosCommand::Resume { namespace }) => {
            act::chaos_resume(&client, namespace.as_deref()).await
        }
        Command::Backup {
            tenant,
            schedule,
            wait,
        } => act::backup(&client, &tenant, schedule.as_deref(), wait).await,
        Command::Restore {
            backup,
            to,
            namespace,
            wait,
        } => act::restore(&client, &backup, &to, namespace.as_deref(), wait).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn timeouts_parse_like_kubectl_durations() {
        assert_eq!(parse_timeout("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_timeout("2"), Ok(Duration::from_secs(2)));
        assert!(parse_timeout("5 minutes").is_err());
        assert!(parse_timeout("m").is_err());
    }
}
