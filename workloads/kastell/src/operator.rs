//! `kastell operator`: runs the controllers that reconcile Kastell's resources in the
//! cluster the kubeconfig (or the pod's service account) names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use kastell_operator::controller::leader::Election;
use kastell_operator::serve::{serve, Options, LEASE_DURATION};

#[derive(clap::Args)]
pub struct OperatorArgs {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8081")]
    listen: SocketAddr,
    /// Container image of the stages when a SecOpsPlatform names none.
    #[arg(
        long,
        env = "KASTELL_STAGE_IMAGE",
        default_value = "ghcr.io/kastell-eu/kastell:0.1.0"
    )]
    stage_image: String,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kastell-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "kastell-operator")]
    lease_name: String,
    /// This replica's identity in the Lease [default: the pod name from POD_NAME].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Run without leader election: only safe with exactly one replica.
    #[arg(long)]
    no_leader_election: bool,
    /// Address of the git push webhook (/hooks/git/{namespace}/{platform}); the leader
    /// listens there.
    #[arg(long)]
    webhook_listen: Option<SocketAddr>,
    /// Directory where the git sync caches repositories.
    #[arg(long, env = "KASTELL_GIT_CACHE", default_value = "/tmp/kastell-git")]
    git_cache: PathBuf,
}

pub fn run(args: OperatorArgs) -> anyhow::Result<ExitCode> {
    let identity = args
        .identity
        .unwrap_or_else(|| format!("kastell-operator-{}", std::process::id()));
    let options = Options {
        listen: args.listen,
        stage_image: args.stage_image,
        election: (!args.no_leader_election).then_some(Election {
            namespace: args.lease_namespace,
            lease: args.lease_name,
            identity,
            duration: LEASE_DURATION,
        }),
        webhook_listen: args.webhook_listen,
        git_cache: args.git_cache,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve(options))?;
    Ok(ExitCode::SUCCESS)
}
