//! The daemon's control API: gRPC (proto/ckpt.proto) over a Unix socket that only root
//! may use, and the client the CLI uses to reach it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Response, Status};

use crate::daemon::backend::CheckpointRecord;
use crate::daemon::supervisor::{Command, Shared};
use crate::daemon::{Registry, ReloadOutcome};
use crate::fsutil;
use crate::model::ContainerId;

/// Code generated from proto/ckpt.proto.
pub mod proto {
    tonic::include_proto!("ckpt.daemon.v1");
}

use proto::daemon_client::DaemonClient;
use proto::daemon_server::{Daemon, DaemonServer};

/// Default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/run/ckpt/ckpt.sock";

/// Error from setting up the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("failed to create socket directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another daemon already listens on {path}")]
    InUse { path: PathBuf },
    #[error("failed to remove stale socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to set mode 0600 on {path}")]
    Chmod {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds the control socket with mode 0600 in a 0700 directory. A socket file left by a
/// daemon that died is replaced; one that still accepts connections is an error.
pub async fn bind(path: &Path) -> Result<UnixListener, ListenError> {
    if let Some(dir) = path.parent() {
        fsutil::create_private_dir_all(dir).map_err(|source| ListenError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ListenError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(|source| ListenError::RemoveStale {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| ListenError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ListenError::Chmod {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(listener)
}

/// Serves the API on `listener` until `shutdown` completes. Connections from a peer whose
/// uid is not 0 are closed at once.
pub async fn serve(
    listener: UnixListener,
    service: ControlService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = UnixListenerStream::new(listener).filter(|connection| match connection {
        Ok(stream) => match stream.peer_cred() {
            Ok(credentials) if credentials.uid() == 0 => true,
            Ok(credentials) => {
                tracing::warn!(uid = credentials.uid(), pid = credentials.pid(), "rejected control connection from a non-root user");
                false
            }
            Err(err) => {
                tracing::warn!(error = %err, "rejected control connection without peer credentials");
                false
            }
        },
        Err(_) => true,
    });
    tonic::transport::Server::builder()
        .add_service(DaemonServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Implementation of the gRPC service.
pub struct ControlService {
    pub shared: Arc<Shared>,
    /// The daemon's store; requests about another store are declined.
    pub store_root: PathBuf,
    pub registry: Arc<std::sync::Mutex<Registry>>,
    /// Asks the main loop to reload the policy directory.
    pub reload: mpsc::Sender<oneshot::Sender<ReloadOutcome>>,
}

impl ControlService {
    /// Declines a request whose client works on another store than the daemon's:
    /// the client must then use that store directly, not the daemon's checkpoints.
    fn check_store(&self, requested: &str) -> Result<(), Status> {
        if requested.is_empty() || same_path(Path::new(requested), &self.store_root) {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "the daemon uses store {}, not {requested}",
            self.store_root.display()
        )))
    }
}

/// Returns whether two paths name the same file, comparing canonical forms where they exist.
fn same_path(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canonical(a) == canonical(b)
}

fn rfc3339(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn entry(record: CheckpointRecord) -> proto::CheckpointEntry {
    proto::CheckpointEntry {
        id: record.id.to_string(),
        container: record.container.to_string(),
        created: rfc3339(record.created),
        logical_bytes: record.logical_bytes,
        added_bytes: record.added_bytes,
        health_passing: record.health_passing,
        frozen_time_us: record.frozen_time_us,
        criu_version: record.criu_version,
    }
}

#[tonic::async_trait]
impl Daemon for ControlService {
    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusReply>, Status> {
        let containers = self
            .shared
            .board
            .list()
            .into_iter()
            .map(|status| proto::ContainerStatus {
                container: status.container.to_string(),
                policy: status.policy_path.display().to_string(),
                interval_ms: status.interval.as_millis() as u64,
                next_checkpoint: status.next_checkpoint.map(rfc3339).unwrap_or_default(),
                last_result: status.last_result,
                last_good_checkpoint: status
                    .last_good
                    .as_ref()
                    .map(|(id, _)| id.to_string())
                    .unwrap_or_default(),
                last_good_time: status
                    .last_good
                    .map(|(_, time)| rfc3339(time))
                    .unwrap_or_default(),
                checkpoints_taken: status.checkpoints_taken,
                checkpoints_failed: status.checkpoints_failed,
                failures_detected: status.failures_detected,
                state: status.state.as_str().to_string(),
            })
            .collect();
        let policy_errors = crate::daemon::lock(&self.registry).errors.clone();
        Ok(Response::new(proto::StatusReply {
            containers,
            policy_errors,
        }))
    }

    async fn checkpoint(
        &self,
        request: Request<proto::CheckpointRequest>,
    ) -> Result<Response<proto::CheckpointReply>, Status> {
        let request = request.into_inner();
        self.check_store(&request.store)?;
        let container: ContainerId = request
            .container
            .parse()
            .map_err(|err: crate::model::InvalidId| Status::invalid_argument(err.to_string()))?;
        let sender = crate::daemon::lock(&self.registry)
            .sender_for(&container)
            .ok_or_else(|| {
                Status::not_found(format!("container {container} has no policy in the daemon"))
            })?;
        let (reply, result) = oneshot::channel();
        let started = std::time::Instant::now();
        sender
            .send(Command::CheckpointNow(reply))
            .await
            .map_err(|_| {
                Status::unavailable(format!("supervisor of container {container} stopped"))
            })?;
        let record = result
            .await
            .map_err(|_| {
                Status::unavailable(format!("supervisor of container {container} stopped"))
            })?
            .map_err(Status::internal)?;
        Ok(Response::new(proto::CheckpointReply {
            checkpoint: record.id.to_string(),
            logical_bytes: record.logical_bytes,
            added_bytes: record.added_bytes,
            duration_ms: started.elapsed().as_millis() as u64,
            frozen_time_us: record.frozen_time_us,
        }))
    }

    async fn list(
        &self,
        request: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListReply>, Status> {
        let request = request.into_inner();
        self.check_store(&request.store)?;
        let container = request.container;
        let filter: Option<ContainerId> = if container.is_empty() {
            None
        } else {
            Some(container.parse().map_err(|err: crate::model::InvalidId| {
                Status::invalid_argument(err.to_string())
            })?)
        };
        let backend = Arc::clone(&self.shared.backend);
        let records = tokio::task::spawn_blocking(move || match filter {
            Some(container) => backend.list_checkpoints(&container),
            None => backend.list_all_checkpoints(),
        })
        .await
        .map_err(|err| Status::internal(err.to_string()))?
        .map_err(|err| Status::internal(format!("{err:#}")))?;
        Ok(Response::new(proto::ListReply {
            checkpoints: records.into_iter().map(entry).collect(),
        }))
    }

    async fn reload(
        &self,
        _request: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadReply>, Status> {
        let (reply, outcome) = oneshot::channel();
        self.reload
            .send(reply)
            .await
            .map_err(|_| Status::unavailable("the daemon is shutting down"))?;
        let outcome = outcome
            .await
            .map_err(|_| Status::unavailable("the daemon is shutting down"))?;
        Ok(Response::new(proto::ReloadReply {
            policies: outcome.policies as u32,
            policy_errors: outcome.errors,
        }))
    }
}

/// Error from reaching the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the daemon is not running: nothing answers on {path}")]
    NotRunning { path: PathBuf },
    #[error("permission denied on {path}: the daemon serves only root")]
    Denied { path: PathBuf },
    #[error("failed to connect to the daemon at {path}; note that the daemon serves only root")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Connects to the daemon's socket. Returns [`ConnectError::NotRunning`] when nothing
/// listens there, so that callers can fall back to working on the store directly.
pub async fn connect(path: &Path) -> Result<DaemonClient<Channel>, ConnectError> {
    match UnixStream::connect(path).await {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            return Err(ConnectError::Denied {
                path: path.to_path_buf(),
            });
        }
        Err(_) => {
            return Err(ConnectError::NotRunning {
                path: path.to_path_buf(),
            });
        }
    }
    let socket = path.to_path_buf();
    // The URI is required by the HTTP/2 layer but unused: the connector always dials the socket.
    let channel = Endpoint::from_static("http://ckpt.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|source| ConnectError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(DaemonClient::new(channel))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn socket_is_private_and_single_owner() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/ckpt.sock");

        let listener = bind(&socket).await.unwrap();
        assert_eq!(mode(&socket), 0o600);
        assert_eq!(mode(socket.parent().unwrap()), 0o700);

        // A second daemon must not take over a socket that accepts connections.
        let second = bind(&socket).await;
        assert!(
            matches!(second, Err(ListenError::InUse { .. })),
            "{second:?}"
        );

        // A socket file left by a daemon that died is replaced.
        drop(listener);
        let replaced = bind(&socket).await;
        assert!(replaced.is_ok(), "{replaced:?}");
    }

    #[tokio::test]
    async fn connect_without_daemon_reports_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let result = connect(&dir.path().join("none.sock")).await;
        assert!(
            matches!(result, Err(ConnectError::NotRunning { .. })),
            "{:?}",
            result.err()
        );
    }
}
