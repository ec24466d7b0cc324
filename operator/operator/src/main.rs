//! `azora-operator`: the binary. `run` starts the operator (leader election, controllers, `/metrics`,
//! `/healthz`, `/readyz`); `crd` prints or writes the CRDs. Start-up code: errors here end the process.

mod serve;

use std::time::Duration;

use anyhow::Context as _;
use azora_adapters::dns::embedded::{self, Zones};
use azora_adapters::geoip::GeoIp;
use azora_adapters::leader::{self, Fence, LeaseConfig};
use azora_adapters::probe::Prober;
use azora_adapters::secrets::SecretKeys;
use azora_controllers::failover::decide::FailoverConfig;
use azora_controllers::health::aggregate::AggregateConfig;
use azora_controllers::health::engine::{self, EngineConfig};
use azora_controllers::tenancy::TenancyConfig;
use azora_controllers::tenancy::replication::ReplicationConfig;
use azora_controllers::{TermConfig, failover, health};
use azora_runtime::cache::{Cache, Caches};
use azora_runtime::clusters::Clusters;
use azora_runtime::events::Recorder;
use azora_runtime::pipeline::Kind as _;
use azora_runtime::supervise::Supervisor;
use azora_runtime::{Context, Handles, Metrics};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tracing::info;

#[derive(Parser)]
#[command(
    name = "azora-operator",
    version,
    about = "The Azora multi-region control plane operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against the cluster in KUBECONFIG (or in-cluster config).
    Run(Box<RunArgs>),
    /// Print every CRD as YAML, or write one file per kind.
    Crd(CrdArgs),
    /// Run only the probe engine, as an observer in another vantage point (reports through the API).
    Probe(ProbeArgs),
    /// Run the region agent: makes and reverts chaos faults in its region (each with an expiry it keeps by
    /// itself), and next to a database member fences a stale local primary (newer epoch, or the hub lost)
    /// and rebuilds a fenced former primary as a standby (PostgreSQL: pg_rewind or a fresh base backup;
    /// Redis: it follows the recorded primary).
    Agent(AgentArgs),
}

#[derive(Parser)]
struct AgentArgs {
    /// The region the agent runs in.
    #[arg(long)]
    region: String,
    /// The Database whose member runs next to the agent (its database duty: fences a stale or cut-off local
    /// primary; rebuilds a PostgreSQL member with --pg-data, rejoins a Redis member by itself).
    #[arg(long)]
    database: Option<String>,
    /// The PostgreSQL member's data directory (for rebuilds).
    #[arg(long, requires = "database")]
    pg_data: Option<std::path::PathBuf>,
    /// A process a fault type stops, as TYPE=PIDFILE (repeatable), e.g. RegionOutage=/run/ingress.pid,
    /// VaultOutage=/run/vault.pid, ObjectStoreOutage=/run/s3.pid. A fault without a target is refused.
    #[arg(long = "fault-target", value_parser = parse_fault_target)]
    fault_targets: Vec<(azora_api::chaos::FaultType, std::path::PathBuf)>,
    /// A TCP proxy the traffic from a peer region into a service of this region passes through, as
    /// PEER=LISTEN->UPSTREAM (repeatable), e.g. europe=0.0.0.0:7443->10.0.0.5:443. NetworkPartition and
    /// NetworkLatency faults from PEER are made here; a network fault without a link from its peer is refused.
    #[arg(long = "link", value_parser = azora_controllers::chaos::link::parse_link)]
    links: Vec<azora_controllers::chaos::link::Link>,
    /// Where the agent remembers the faults it made (reverted at expiry and on start-up).
    #[arg(long, default_value = "/var/lib/azora-agent")]
    state_dir: std::path::PathBuf,
    /// Directory of pg_ctl, pg_rewind and pg_basebackup.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin: std::path::PathBuf,
    /// Run those programs as this OS user (when the agent runs as root; PostgreSQL refuses root).
    #[arg(long)]
    pg_os_user: Option<String>,
    /// Server log for `pg_ctl start` after a rebuild. Default: `<pg-data>.server.log`.
    #[arg(long)]
    pg_log: Option<std::path::PathBuf>,
    /// Namespace of the credentials Secrets (the operator's).
    #[arg(long, env = "AZORA_NAMESPACE")]
    namespace: Option<String>,
    /// A local primary that has not reached the hub for this long fences itself.
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    hub_loss_fence: Duration,
    /// How often the agent looks.
    #[arg(long, default_value = "2s", value_parser = parse_duration_arg)]
    interval: Duration,
    /// Log format.
    #[arg(long, value_enum, default_value = "auto")]
    log_format: LogFormat,
}

#[derive(Parser)]
struct ProbeArgs {
    /// Observer name, unique per vantage point (e.g. `agent-asia`).
    #[arg(long)]
    observer: String,
    /// Namespace of the observer Lease (the operator's namespace).
    #[arg(long, env = "AZORA_NAMESPACE")]
    namespace: Option<String>,
    /// Source address probes connect from.
    #[arg(long)]
    probe_source: Option<std::net::IpAddr>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9091")]
    metrics_addr: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "auto")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// JSON when stderr is not a terminal, human-readable otherwise.
    Auto,
    Json,
    Text,
}

#[derive(Parser)]
struct RunArgs {
    /// Namespace of the leader Lease and of referenced Secrets. Default: POD_NAMESPACE, else the
    /// kubeconfig's namespace, else `default`.
    #[arg(long, env = "AZORA_NAMESPACE")]
    namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, default_value = "azora-operator")]
    lease_name: String,
    /// This replica's identity. Default: POD_NAME, else hostname-pid.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9090", env = "AZORA_METRICS_ADDR")]
    metrics_addr: String,
    /// Reconciles in flight per controller.
    #[arg(long, default_value_t = 4)]
    concurrency: u16,
    /// Tenant reconciles in flight (each syncs every region the tenant lives in).
    #[arg(long, default_value_t = 32)]
    tenant_concurrency: u16,
    /// Requests in flight per regional cluster.
    #[arg(long, default_value_t = 16)]
    cluster_concurrency: usize,
    /// Time between object-storage replication rounds.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    replication_interval: Duration,
    /// How long a replica outlives its deleted source object (safety delay).
    #[arg(long, default_value = "10m", value_parser = parse_duration_arg)]
    replication_delete_delay: Duration,
    /// (tenant, region) replication pairs worked on at once.
    #[arg(long, default_value_t = 16)]
    replication_concurrency: usize,
    /// Backups run at once; one slow or failing tenant holds up only its own slot.
    #[arg(long, default_value_t = 4)]
    backup_concurrency: u16,
    /// How long a failover's DNS step waits for the Databases following the policy to promote in the new
    /// region before DNS moves anyway.
    #[arg(long, default_value = "60s", value_parser = parse_duration_arg)]
    database_wait: Duration,
    /// How often every Database member is observed.
    #[arg(long, default_value = "2s", value_parser = parse_duration_arg)]
    database_interval: Duration,
    /// How often the copies of a finished backup are read back and checked again.
    #[arg(long, default_value = "1h", value_parser = parse_duration_arg)]
    backup_verify_every: Duration,
    /// Directory for backup archives while they are built, uploaded or restored (streamed through it, never
    /// held in memory); stale files from a killed process are removed at start.
    #[arg(long, default_value_os_t = std::env::temp_dir(), env = "AZORA_BACKUP_SCRATCH_DIR")]
    backup_scratch_dir: std::path::PathBuf,
    /// The ServiceAccount token the operator logs in to Vault with (Kubernetes auth), read at each login.
    #[arg(
        long,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token",
        env = "AZORA_VAULT_JWT_FILE"
    )]
    vault_jwt_file: std::path::PathBuf,
    /// Hosts a tenant secret's `verify` check may call besides the tenant's own hostnames (and names under
    /// them): comma-separated names, `*.suffix` (names under it) or `*` (anything); `{tenant}` stands for
    /// the tenant's name, e.g. `*.tenant-{tenant}.svc.cluster.local`.
    #[arg(long, value_delimiter = ',', env = "AZORA_VERIFY_ALLOWED_HOSTS")]
    verify_allowed_hosts: Vec<String>,
    /// Tenants whose secrets are rotated and synced at once.
    #[arg(long, default_value_t = 8)]
    secret_concurrency: u16,
    /// A home region declared lost on a Tenant (`azora.io/home-lost`) is given up by a home move once its
    /// Vault has answered no request for this long.
    #[arg(long, default_value = "1m", value_parser = parse_duration_arg)]
    vault_lost_after: Duration,
    /// An observer Lease not seen to change for this long is removed (its observer is gone).
    #[arg(long, default_value = "10m", value_parser = parse_duration_arg)]
    observer_gc_after: Duration,
    /// Log format.
    #[arg(long, value_enum, default_value = "auto")]
    log_format: LogFormat,
    /// Address of the embedded authoritative GeoDNS server (UDP and TCP); `off` disables it.
    #[arg(long, default_value = "0.0.0.0:5353", env = "AZORA_DNS_ADDR")]
    dns_addr: String,
    /// Other replicas' DNS servers, also checked when verifying a failover (repeatable).
    #[arg(long = "dns-verify-peer")]
    dns_verify_peers: Vec<std::net::SocketAddr>,
    /// GeoIP data for geographic answers: a MaxMind/DB-IP `.mmdb` database (GeoLite2/GeoIP2 Country or City;
    /// the continent of the country record) or a `CIDR CONTINENT` table, told by content. Reloaded within 10 s
    /// when the file changes (a version that does not load keeps the data in use).
    #[arg(long, env = "AZORA_GEOIP_FILE")]
    geoip_file: Option<std::path::PathBuf>,
    /// Source address probes connect from.
    #[arg(long)]
    probe_source: Option<std::net::IpAddr>,
}

#[derive(Parser)]
struct CrdArgs {
    /// Write one file per kind into this directory instead of printing.
    #[arg(long)]
    out_dir: Option<std::path::PathBuf>,
    /// Leave out CEL rules (x-kubernetes-validations), for API servers older than 1.25.
    #[arg(long)]
    strip_cel: bool,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    azora_core::duration::parse_duration(s).map_err(|e| e.to_string())
}

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,kube=warn,kube_client::client::tls=error,hickory_server=warn,hickory_proto=warn",
        )
    });
    // The Vault client's own logging is off whatever RUST_LOG says: its request spans and debug output may
    // carry secret paths and bodies, and every error it sees is reported by the secrets room in words
    // that never hold a value.
    let filter = ["rustify=off", "vaultrs=off"]
        .into_iter()
        .filter_map(|d| d.parse().ok())
        .fold(filter, tracing_subscriber::EnvFilter::add_directive);
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn crd(args: CrdArgs) -> anyhow::Result<()> {
    for crd in azora_api::crds() {
        let crd = if args.strip_cel {
            azora_api::strip_cel(&crd)
        } else {
            crd
        };
        let yaml = azora_api::crd_yaml(&crd)?;
        match &args.out_dir {
            Some(dir) => {
                let path = dir.join(azora_api::crd_file_name(&crd));
                std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The cluster config (KUBECONFIG or in-cluster) and the namespace to work in: `--namespace`, else
/// POD_NAMESPACE, else the kubeconfig's namespace.
async fn cluster_config(namespace: Option<String>) -> anyhow::Result<(kube::Config, String)> {
    let config = kube::Config::infer()
        .await
        .context("no usable KUBECONFIG or in-cluster config")?;
    let namespace = namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((config, namespace))
}

/// The two hub clients: requests (every call has a deadline: 5 s connect, 15 s read and write) and
/// watches (5 s connect, 15 s write; reads are long polls the server ends within 5 minutes).
fn hub_clients(config: kube::Config) -> anyhow::Result<(kube::Client, kube::Client)> {
    let mut requests = config.clone();
    requests.connect_timeout = Some(Duration::from_secs(5));
    requests.read_timeout = Some(Duration::from_secs(15));
    requests.write_timeout = Some(Duration::from_secs(15));
    let mut watches = config;
    watches.connect_timeout = Some(Duration::from_secs(5));
    watches.write_timeout = Some(Duration::from_secs(15));
    watches.read_timeout = Some(Duration::from_secs(330));
    Ok((
        kube::Client::try_from(requests).context("building the Kubernetes client")?,
        kube::Client::try_from(watches).context("building the Kubernetes watch client")?,
    ))
}

/// The API resources of the shared caches, in `Caches::start` order.
fn cache_resources() -> [kube::core::ApiResource; 9] {
    use azora_controllers::{backup, chaos, database, drill, tenancy};
    [
        health::RegionKind::resource(),
        tenancy::TenantKind::resource(),
        failover::FailoverPolicyKind::resource(),
        backup::BackupScheduleKind::resource(),
        backup::BackupKind::resource(),
        backup::RestoreKind::resource(),
        chaos::ChaosExperimentKind::resource(),
        drill::DrDrillKind::resource(),
        database::resource(),
    ]
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let (config, namespace) = cluster_config(args.namespace).await?;
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let (client, watch_client) = hub_clients(config)?;
    let metrics = Metrics::new()?;
    let supervisor = Supervisor::default();
    info!(%namespace, %identity, "starting azora-operator");
    let caches = Caches::start(
        &supervisor,
        &watch_client,
        &namespace,
        cache_resources(),
        &health::observer_selector(),
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let (lead_tx, mut lead_rx) = watch::channel(None);
    let lease_cfg = LeaseConfig::new(namespace.clone(), args.lease_name.clone(), identity.clone());
    let fence = Fence::new(client.clone(), &lease_cfg, lead_rx.clone());
    let ready = serve::Readiness::default();
    let server = tokio::spawn(serve::serve(
        args.metrics_addr.clone(),
        metrics.registry.clone(),
        ready.clone(),
        supervisor.clone(),
    ));
    let election = supervisor.spawn(
        "leader-election",
        leader::run(client.clone(), lease_cfg, lead_tx, stop_rx.clone()),
    );

    // Every replica probes, and every replica serves DNS.
    // A GeoIP file that does not load stops the start (a typo must not silently drop geography); later
    // changes of the file are reloaded, and a bad version keeps the data in use.
    let (geoip, geoip_seen) = match &args.geoip_file {
        Some(p) => {
            let (g, seen) = azora_adapters::geoip::load_watched(p)?;
            (g, seen)
        }
        None => (GeoIp::Empty, None),
    };
    if let Some(p) = &args.geoip_file {
        info!(path = %p.display(), source = %geoip.describe(), "GeoIP data loaded");
    }
    let zones = Zones::new(geoip);
    let _geoip_watch = args.geoip_file.clone().map(|path| {
        let z = zones.clone();
        let mut stop = stop_rx.clone();
        supervisor.spawn(
            "geoip-reload",
            azora_adapters::geoip::watch(
                path,
                geoip_seen.clone(),
                Duration::from_secs(5),
                move |g| z.set_geoip(g),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ),
        )
    });
    let mut verify_servers = args.dns_verify_peers.clone();
    let _dns = if args.dns_addr == "off" {
        None
    } else {
        let addr: std::net::SocketAddr = args.dns_addr.parse().context("--dns-addr")?;
        let local = if addr.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        verify_servers.insert(0, local);
        let server = embedded::serve(addr, zones.clone()).await?;
        Some(supervisor.spawn("dns-server", server.stopped()))
    };
    let engine_cfg = EngineConfig {
        observer: identity.clone(),
        namespace: namespace.clone(),
        prober: Prober::new(args.probe_source),
    };
    let engine = supervisor.spawn(
        "probe-engine",
        engine::run(
            client.clone(),
            engine_cfg,
            metrics.clone(),
            caches.regions.clone(),
            caches.observers.clone(),
            stop_rx.clone(),
        ),
    );
    let dns_serving = supervisor.spawn(
        "dns-serving",
        failover::serve::run(
            zones.clone(),
            caches.policies.clone(),
            caches.regions.clone(),
            stop_rx.clone(),
        ),
    );
    let failover_cfg = FailoverConfig {
        zones: zones.clone(),
        verify_servers,
        database_wait: args.database_wait,
    };

    let signal = tokio::spawn(shutdown_signal());
    let recorder = Recorder::new(client.clone(), "azora-operator", &identity);
    let mut signal = signal;
    loop {
        // Stand by until this replica leads, or until shutdown.
        ready.set(true);
        tokio::select! {
            _ = &mut signal => break,
            () = supervisor.failed() => break,
            changed = lead_rx.wait_for(Option::is_some) => { if changed.is_err() { break; } }
        }
        let epoch = lead_rx.borrow().map(|l| l.epoch).unwrap_or_default();
        metrics.leader.set(1);
        metrics.leader_epoch.set(epoch as i64);
        info!(epoch, "leading: starting controllers");
        let mut term_rx = lead_rx.clone();
        let mut stop_watch = stop_rx.clone();
        let term_end = async move {
            tokio::select! {
                _ = term_rx.wait_for(Option::is_none) => {}
                _ = stop_watch.wait_for(|s| *s) => {}
            }
        };
        let ctx = Context {
            client: client.clone(),
            namespace: namespace.clone(),
            fence: fence.clone(),
            secrets: SecretKeys::new(client.clone(), &namespace),
            recorder: recorder.clone(),
            metrics: metrics.clone(),
            caches: caches.clone(),
            handles: Handles {
                verdicts: Default::default(),
                clusters: Clusters::new(args.cluster_concurrency),
                interlock: Default::default(),
            },
            supervisor: supervisor.clone(),
        };
        let cfg = TermConfig {
            concurrency: args.concurrency,
            health: AggregateConfig {
                gc_after: args.observer_gc_after,
            },
            failover: failover_cfg.clone(),
            tenancy: TenancyConfig {
                concurrency: args.tenant_concurrency,
                replication: ReplicationConfig {
                    interval: args.replication_interval,
                    delete_delay: args.replication_delete_delay,
                    concurrency: args.replication_concurrency,
                },
            },
            backup: azora_controllers::backup::BackupConfig {
                concurrency: args.backup_concurrency.max(1),
                verify_every: args.backup_verify_every,
                scratch_dir: args.backup_scratch_dir.clone(),
            },
            secrets: azora_controllers::secrets::SecretsConfig {
                jwt_file: Some(args.vault_jwt_file.clone()),
                concurrency: args.secret_concurrency.max(1),
                verify_hosts: args
                    .verify_allowed_hosts
                    .iter()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .collect(),
                lost_after: args.vault_lost_after,
            },
            database: azora_controllers::database::DatabaseConfig {
                interval: args.database_interval,
                ..Default::default()
            },
            chaos: azora_controllers::chaos::ChaosConfig::default(),
        };
        let controllers =
            azora_runtime::term::run_term(term_end, move |stop| azora_controllers::term(&ctx, cfg, stop));
        tokio::pin!(controllers);
        let mut stopping = false;
        tokio::select! {
            _ = &mut controllers => {}
            _ = &mut signal => { stopping = true; }
            () = supervisor.failed() => { stopping = true; }
        }
        if stopping {
            // Tasks ending from here on are the shutdown, not failures (a SIGTERM exits 0).
            supervisor.stopping();
            stop_tx.send_replace(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), controllers).await;
        }
        metrics.leader.set(0);
        metrics.leader_epoch.set(0);
        if stopping {
            break;
        }
        info!("leadership ended: controllers stopped, standing by");
    }
    info!("shutting down");
    ready.set(false);
    let failures = supervisor.failures();
    supervisor.stopping();
    stop_tx.send_replace(true);
    // The election loop releases a held lease on shutdown, so a standby takes over at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !election.is_finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.abort();
    dns_serving.abort();
    server.abort();
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("background tasks failed: {}", failures.join(", "))
    }
}

async fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let (config, namespace) = cluster_config(args.namespace).await?;
    let (client, watch_client) = hub_clients(config)?;
    let metrics = Metrics::new()?;
    let supervisor = Supervisor::default();
    let ready = serve::Readiness::default();
    ready.set(true);
    let server = tokio::spawn(serve::serve(
        args.metrics_addr.clone(),
        metrics.registry.clone(),
        ready,
        supervisor.clone(),
    ));
    let ar = health::RegionKind::resource();
    let regions = Cache::start(
        &supervisor,
        "cache/regions",
        kube::Api::all_with(watch_client.clone(), &ar),
        kube::runtime::watcher::Config::default(),
        ar,
    );
    let observers = Cache::start(
        &supervisor,
        "cache/observers",
        kube::Api::namespaced(watch_client, &namespace),
        kube::runtime::watcher::Config::default().labels(&health::observer_selector()),
        (),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    info!(observer = %args.observer, %namespace, "starting probe-only observer");
    let cfg = EngineConfig {
        observer: args.observer,
        namespace,
        prober: Prober::new(args.probe_source),
    };
    let engine = supervisor.spawn(
        "probe-engine",
        engine::run(client, cfg, metrics, regions, observers, stop_rx),
    );
    let failed = tokio::select! {
        () = shutdown_signal() => false,
        () = supervisor.failed() => true,
    };
    supervisor.stopping();
    stop_tx.send_replace(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    engine.abort();
    server.abort();
    if failed {
        anyhow::bail!("background tasks failed: {}", supervisor.failures().join(", "));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd(args) => crd(args),
        Command::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(run(*args))
        }
        Command::Probe(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(probe(args))
        }
        Command::Agent(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(agent(args))
        }
    }
}

fn parse_fault_target(s: &str) -> Result<(azora_api::chaos::FaultType, std::path::PathBuf), String> {
    let (t, file) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected TYPE=PIDFILE"))?;
    let fault = t.parse::<azora_api::chaos::FaultType>().map_err(|_| {
        format!("{t:?} is not a fault type (RegionOutage, VaultOutage, ObjectStoreOutage, ...)")
    })?;
    if file.is_empty() {
        return Err(format!("{s:?}: the pid file is empty"));
    }
    Ok((fault, file.into()))
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let (config, namespace) = cluster_config(args.namespace).await?;
    let (client, _) = hub_clients(config)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let identity = format!("agent-{}-{}-{}", args.region, host.trim(), std::process::id());
    // A link that cannot listen is a misconfigured agent: it stops here, visibly.
    let links = azora_controllers::chaos::link::Links::start(args.links.clone())
        .await
        .map_err(|e| anyhow::anyhow!("link proxies: {e}"))?;
    let faults = azora_controllers::chaos::agent::FaultAgentConfig {
        region: args.region.clone(),
        namespace: namespace.clone(),
        targets: args.fault_targets.into_iter().collect(),
        state_file: args.state_dir.join(format!("faults-{}.json", args.region)),
        interval: Duration::from_secs(1),
        identity: identity.clone(),
    };
    // The fault duty always runs; on SIGTERM it reverts what is in place before the process ends.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|s| *s).await;
    };
    let fault_duty = tokio::spawn(azora_controllers::chaos::agent::run(
        client.clone(),
        faults,
        std::sync::Arc::new(links),
        stopped,
    ));
    let database_duty = async {
        match args.database {
            Some(database) => {
                let rebuild = args.pg_data.map(|data_dir| {
                    let log_file = args.pg_log.unwrap_or_else(|| {
                        let mut p = data_dir.clone().into_os_string();
                        p.push(".server.log");
                        p.into()
                    });
                    azora_controllers::database::agent::PgRebuild {
                        data_dir,
                        bin_dir: args.pg_bin,
                        os_user: args.pg_os_user,
                        log_file,
                    }
                });
                let cfg = azora_controllers::database::agent::AgentConfig {
                    region: args.region,
                    database,
                    rebuild,
                    namespace,
                    hub_loss_fence: args.hub_loss_fence,
                    interval: args.interval,
                };
                azora_controllers::database::agent::run(client, cfg, identity).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = database_duty => {}
        () = shutdown_signal() => {}
    }
    let _ = stop_tx.send(true);
    // The revert itself is immediate (a signal); reporting it to the hub gets at most 3 s of this.
    let _ = tokio::time::timeout(Duration::from_secs(10), fault_duty).await;
    Ok(())
}
