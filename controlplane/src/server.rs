//! Wiring `berth serve` together: data dir, authority, store, first admin key, the mesh
//! and API servers, the serving-certificate rotation and the optional local worker, all
//! as tracked tasks that stop with one shutdown token.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::preview::Previews;
use crate::api::ssh::{self, SshGatewayInfo};
use crate::api::{self, ApiParts, ApiState, KeyRateLimits};
use crate::api_keys::{ApiKeyCache, create_first_admin_key};
use crate::audit::AuditLog;
use crate::authority::Authority;
use crate::config::ControlPlaneConfig;
use crate::fleet::{Fleet, FleetSettings};
use crate::metrics::Metrics;
use crate::sandboxes::Sandboxes;
use crate::store::{Store, redact_url};
use crate::teams::Teams;
use crate::workers::Workers;
use crate::{VERSION, cluster, mesh};

/// Clock skew tolerated on token times.
const TOKEN_LEEWAY: Duration = Duration::from_secs(60);

/// The listeners `berth serve` needs; tests pass port-0 listeners.
#[derive(Debug)]
pub struct Listeners {
    pub api: TcpListener,
    pub mesh: TcpListener,
    /// `preview_listen`, when configured.
    pub preview: Option<TcpListener>,
    /// `ssh_listen`, when configured.
    pub ssh: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &ControlPlaneConfig) -> anyhow::Result<Self> {
        let api = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let mesh = TcpListener::bind(config.mesh_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.mesh_listen))?;
        let preview = bind_optional(config.preview_listen).await?;
        let ssh = bind_optional(config.ssh_listen).await?;
        Ok(Self {
            api,
            mesh,
            preview,
            ssh,
        })
    }
}

async fn bind_optional(address: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    match address {
        Some(address) => Ok(Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address}"))?,
        )),
        None => Ok(None),
    }
}

/// A started control plane.
#[derive(Debug)]
pub struct RunningControlPlane {
    pub api_addr: SocketAddr,
    pub mesh_addr: SocketAddr,
    /// The preview listener's address, when there is one.
    pub preview_addr: Option<SocketAddr>,
    /// The SSH gateway's address and host key fingerprint, when there is one.
    pub ssh: Option<SshGatewayInfo>,
    /// Set on the very first start only: the admin key, to be shown once.
    pub first_admin_key: Option<String>,
    pub admin_key_path: PathBuf,
    pub fleet: Fleet,
    pub sandboxes: Sandboxes,
    /// Kept so that [`RunningControlPlane::wait`] can commit what is still queued.
    audit: AuditLog,
    tasks: TaskTracker,
}

impl RunningControlPlane {
    /// Waits until every task has stopped (after the shutdown token was cancelled).
    pub async fn wait(self) {
        self.tasks.close();
        self.tasks.wait().await;
        // records of the last calls may still be queued for the audit appender
        if let Err(err) = self.audit.close().await {
            tracing::error!(error = %err, "cannot commit the last audit records");
        }
        self.fleet.store().close().await;
    }
}

pub async fn start(
    config: ControlPlaneConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningControlPlane> {
    config.validate()?;
    let data_dir = config.data_dir.clone();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let api_addr = listeners.api.local_addr()?;
    let mesh_addr = listeners.mesh.local_addr()?;
    let preview_addr = match &listeners.preview {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    let ssh_host_key = match &listeners.ssh {
        Some(_) => Some(ssh::host_key::load_or_create(&data_dir)?),
        None => None,
    };
    let ssh_info = match (&listeners.ssh, &ssh_host_key) {
        (Some(listener), Some(key)) => Some(SshGatewayInfo {
            address: listener.local_addr()?,
            fingerprint: ssh::host_key::fingerprint(key),
            public_key: ssh::host_key::public_line(key),
        }),
        _ => None,
    };

    let database_url = config.database_url()?;
    let store = Store::open_url(&database_url)
        .await
        .with_context(|| format!("cannot open the store at {}", redact_url(&database_url)))?;
    let keys_dir = config.keys_dir();
    cluster::check_keys_present(&store, &keys_dir).await?;

    let mut serving_ips = config.certificates.ip_addresses.clone();
    if !mesh_addr.ip().is_unspecified() && !serving_ips.contains(&mesh_addr.ip()) {
        serving_ips.push(mesh_addr.ip());
    }
    let authority = Arc::new(
        Authority::load_or_create(
            &keys_dir,
            &config.trust_domain,
            serving_names(&config),
            serving_ips,
            config.certificates.serving_ttl,
        )
        .context("cannot load or create the certificate authority")?,
    );
    cluster::join(&store, &authority, &keys_dir).await?;
    authority
        .revocations()
        .revoke_serials(store.revoked_serials().await?);

    let admin_key_path = data_dir.join("admin.key");
    let first_admin_key = ensure_admin_key(&store, &admin_key_path).await?;

    let workers = Arc::new(Workers::new(authority.clone()));
    let fleet = Fleet::new(
        store.clone(),
        authority.clone(),
        FleetSettings {
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_grace: config.heartbeat_grace(),
            lease_duration: config.lease_duration(),
            worker_cert_ttl: config.certificates.worker_ttl,
            worker_token_ttl: config.tokens.worker_token_ttl,
            join_default_ttl: config.tokens.join_ttl,
            join_max_ttl: config.tokens.join_max_ttl,
            token_leeway: TOKEN_LEEWAY,
            spawn_confirm_within: config.spawn_confirm_within(),
        },
        Metrics::new(),
        workers.clone(),
    );

    let tasks = TaskTracker::new();
    let mesh_tls = Arc::new(authority.mesh_server_config()?);
    {
        let (fleet, shutdown) = (fleet.clone(), shutdown.clone());
        let limits = config.limits.clone();
        tasks.spawn(async move {
            if let Err(err) = mesh::serve(listeners.mesh, mesh_tls, fleet, limits, shutdown).await {
                tracing::error!(error = %err, "mesh server stopped");
            }
        });
    }
    let api_tls = if api_addr.ip().is_loopback() {
        None
    } else {
        Some(Arc::new(authority.api_server_config()?))
    };
    let sandboxes = Sandboxes::new(
        store.clone(),
        workers,
        config.sandbox_settings(),
        tasks.clone(),
    );
    let audit = AuditLog::new(store.clone());
    let health = api::grpc_health_reporter().await;
    tasks.spawn(api::keep_grpc_health_updated(
        fleet.clone(),
        health.clone(),
        config.heartbeat_interval,
        shutdown.clone(),
    ));
    let api_keys = ApiKeyCache::default();
    let state = ApiState::new(ApiParts {
        fleet: fleet.clone(),
        sandboxes: sandboxes.clone(),
        secrets: crate::secrets::Secrets::new(store.clone(), authority.sealing_key().clone()),
        teams: Teams::new(store.clone(), sandboxes.clone(), api_keys.clone()),
        audit: audit.clone(),
        store: store.clone(),
        api_keys,
        key_rate_limits: KeyRateLimits::new(config.api.key_rate_limit, config.api.key_rate_burst),
        version: Arc::from(VERSION),
        health,
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
        previews: Previews::new(
            &config.preview_domain,
            authority.tokens().clone(),
            preview_served_in_plain_text(api_addr, preview_addr),
        ),
        ssh: ssh_info.clone(),
    });
    let router = api::router(state.clone());
    if let (Some(listener), Some(host_key)) = (listeners.ssh, ssh_host_key) {
        let (state, stop) = (state.clone(), shutdown.clone());
        let config = ssh::server_config(host_key);
        tasks.spawn(async move {
            if let Err(err) = ssh::serve(listener, state, config, stop).await {
                tracing::error!(error = %err, "ssh gateway stopped");
            }
        });
        tasks.spawn(purge_ssh_tokens(store.clone(), shutdown.clone()));
    }
    if let Some(listener) = listeners.preview {
        let tls = if preview_addr.is_some_and(|addr| addr.ip().is_loopback()) {
            None
        } else {
            Some(Arc::new(authority.api_server_config()?))
        };
        let router = api::preview::router(state);
        let shutdown = shutdown.clone();
        let limits = config.limits.api_connections();
        tasks.spawn(async move {
            if let Err(err) = api::serve(listener, tls, router, limits, shutdown).await {
                tracing::error!(error = %err, "preview server stopped");
            }
        });
    }
    {
        let shutdown = shutdown.clone();
        let limits = config.limits.api_connections();
        tasks.spawn(async move {
            if let Err(err) = api::serve(listeners.api, api_tls, router, limits, shutdown).await {
                tracing::error!(error = %err, "api server stopped");
            }
        });
    }
    tasks.spawn(rotate_serving_certificate(
        authority.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(sync_revocations(
        fleet.clone(),
        config.heartbeat_interval,
        shutdown.clone(),
    ));
    tasks.spawn(reap_expired(
        sandboxes.clone(),
        fleet.clone(),
        config.sandboxes.reap_interval,
        shutdown.clone(),
    ));

    if let Some(ssh) = &ssh_info {
        tracing::info!(address = %ssh.address, fingerprint = %ssh.fingerprint, "ssh gateway listening");
    }
    tracing::info!(%api_addr, %mesh_addr, store = store.backend().as_str(), trust_domain = %authority.trust_domain(), "control plane started");
    Ok(RunningControlPlane {
        api_addr,
        mesh_addr,
        preview_addr,
        ssh: ssh_info,
        first_admin_key,
        admin_key_path,
        fleet,
        sandboxes,
        audit,
        tasks,
    })
}

/// Forgets one-time SSH tokens a day after they expired, hourly.
async fn purge_ssh_tokens(store: Store, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match crate::ssh_access::purge_spent_tokens(&store).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "forgot expired SSH tokens"),
            Err(err) => tracing::warn!(error = %err, "cannot purge expired SSH tokens"),
        }
    }
}

/// The DNS names of the serving certificate: the configured ones, and the preview
/// domain's wildcard so previews over TLS verify.
fn serving_names(config: &ControlPlaneConfig) -> Vec<String> {
    let mut names = config.certificates.dns_names.clone();
    if let Some(host) = api::preview::domain_host(&config.preview_domain) {
        let wildcard = format!("*.{host}");
        if !names.contains(&wildcard) {
            names.push(wildcard);
        }
    }
    names
}

/// Whether preview links are `http` (every listener serving previews is on loopback,
/// so served without TLS) rather than `https`.
fn preview_served_in_plain_text(api: SocketAddr, preview: Option<SocketAddr>) -> bool {
    api.ip().is_loopback() && preview.is_none_or(|addr| addr.ip().is_loopback())
}

/// On a store without keys: creates the admin key and writes it 0600 to `path`. Of
/// control planes starting together on one database exactly one makes it.
async fn ensure_admin_key(store: &Store, path: &std::path::Path) -> anyhow::Result<Option<String>> {
    let Some(key) = create_first_admin_key(store).await? else {
        return Ok(None);
    };
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{key}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(key))
}

/// Destroys sandboxes whose TTL ran out, marks lost those whose lease ran out, moves
/// drains along, finishes destroys a dead replica left behind and stops sandboxes idle
/// past their `auto_stop`. Safe beside other
/// replicas doing the same: every step starts with a conditional claim in the store,
/// so nothing is destroyed or released twice.
///
/// Leases are left alone for one heartbeat grace after start: while this control plane
/// was down (or restarting) its workers could not renew them, so a lease that ran out
/// then says nothing about the worker. A live worker renews it within the grace; one
/// that stays silent has its sandboxes marked lost after it.
async fn reap_expired(
    sandboxes: Sandboxes,
    fleet: Fleet,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let leases_judged_from = tokio::time::Instant::now() + fleet.settings().heartbeat_grace;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if tokio::time::Instant::now() >= leases_judged_from
            && let Err(err) = fleet.expire_leases().await
        {
            tracing::warn!(error = %err, "expiring leases failed");
        }
        if let Err(err) = sandboxes.progress_drains().await {
            tracing::warn!(error = %err, "moving drains along failed");
        }
        match sandboxes.retry_stalled_destroys().await {
            Ok(0) => {}
            Ok(destroyed) => tracing::info!(destroyed, "stalled destroys finished"),
            Err(err) => tracing::warn!(error = %err, "finishing stalled destroys failed"),
        }
        match sandboxes.prune_expired().await {
            Ok(0) => {}
            Ok(reaped) => tracing::info!(reaped, "expired sandboxes destroyed"),
            Err(err) => tracing::warn!(error = %err, "reaping expired sandboxes failed"),
        }
        match sandboxes.stop_idle().await {
            Ok(0) => {}
            Ok(stopped) => tracing::info!(stopped, "idle sandboxes stopped (auto_stop)"),
            Err(err) => tracing::warn!(error = %err, "stopping idle sandboxes failed"),
        }
    }
}

/// Takes up revocations made through other replicas sharing the store: their
/// certificates are refused here too within about one heartbeat interval.
async fn sync_revocations(fleet: Fleet, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match fleet.sync_revocations().await {
            Ok(0) => {}
            Ok(adopted) => tracing::warn!(
                adopted,
                "certificates revoked by another replica refused here too"
            ),
            Err(err) => tracing::warn!(error = %err, "reading revocations failed"),
        }
    }
}

/// Re-issues the serving certificate at two thirds of its life.
async fn rotate_serving_certificate(authority: Arc<Authority>, shutdown: CancellationToken) {
    let period = authority.serving_ttl() * 2 / 3;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        match authority.rotate_serving_certificate() {
            Ok(()) => tracing::info!("serving certificate rotated"),
            Err(err) => tracing::error!(error = %err, "serving certificate rotation failed"),
        }
    }
}
