//! An S3-protocol server backed by a local directory.
//!
//! Where it sits: under the object store client, in place of MinIO or a
//! cloud bucket, on one machine and in the tests.
//!
//! birdsong keeps audio and model artifacts in object storage. In a full
//! deployment that is MinIO or a cloud bucket; on a single machine without
//! Docker, and in every integration test, it is this server: the `s3s`
//! protocol implementation over `s3s-fs`, served over a real TCP socket so
//! that the application talks to it through exactly the same HTTP and SigV4
//! path as it would to production S3. Nothing here is a fake client.
//!
//! [`S3Server::start`] binds a port (use port 0 for a free one), serves
//! connections on the current tokio runtime and stops gracefully when the
//! handle is shut down or dropped. [`S3Server::start_with_access`] adds an
//! access policy, which tests use to make a chosen request fail.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::access::S3Access;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum S3ServerError {
    /// The data directory could not be created or opened.
    #[error("cannot use {path} as the object store directory: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The storage backend refused the directory.
    #[error("cannot open the object store in {path}: {message}")]
    Backend { path: PathBuf, message: String },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Credentials the server accepts; requests signed with anything else are
/// refused with `SignatureDoesNotMatch` or `InvalidAccessKeyId`, as real S3 does.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
}

/// A running server. Dropping it stops accepting connections.
pub struct S3Server {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl S3Server {
    /// Starts serving `root` on `bind` (e.g. `127.0.0.1:0` for a free port).
    pub async fn start(
        root: &Path,
        bind: &str,
        credentials: Credentials,
    ) -> Result<Self, S3ServerError> {
        Self::serve(root, bind, credentials, |_| {}).await
    }

    /// Like [`S3Server::start`], with `access` deciding on every
    /// authenticated request (after the signature check): fault tests deny a
    /// chosen operation, such as one part of a multipart upload, to see how
    /// the client cleans up.
    pub async fn start_with_access(
        root: &Path,
        bind: &str,
        credentials: Credentials,
        access: impl S3Access,
    ) -> Result<Self, S3ServerError> {
        Self::serve(root, bind, credentials, |builder| {
            builder.set_access(access)
        })
        .await
    }

    async fn serve(
        root: &Path,
        bind: &str,
        credentials: Credentials,
        configure: impl FnOnce(&mut S3ServiceBuilder),
    ) -> Result<Self, S3ServerError> {
        std::fs::create_dir_all(root).map_err(|source| S3ServerError::DataDir {
            path: root.to_path_buf(),
            source,
        })?;
        let fs = s3s_fs::FileSystem::new(root).map_err(|e| S3ServerError::Backend {
            path: root.to_path_buf(),
            message: format!("{e:?}"),
        })?;
        let service = {
            let mut builder = S3ServiceBuilder::new(fs);
            builder.set_auth(SimpleAuth::from_single(
                credentials.access_key,
                credentials.secret_key,
            ));
            configure(&mut builder);
            builder.build()
        };
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| S3ServerError::Bind {
                addr: bind.to_string(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| S3ServerError::Bind {
                addr: bind.to_string(),
                source,
            })?;
        let (shutdown, mut stop) = watch::channel(false);
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            let graceful = hyper_util::server::graceful::GracefulShutdown::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => {
                            let conn = http.serve_connection(TokioIo::new(socket), service.clone());
                            let conn = graceful.watch(conn.into_owned());
                            tokio::spawn(async move {
                                if let Err(e) = conn.await {
                                    tracing::debug!(error = %e, "s3 connection ended with an error");
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "s3 server could not accept a connection");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    },
                    _ = stop.changed() => break,
                }
            }
            tokio::select! {
                () = graceful.shutdown() => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            }
        });
        Ok(Self {
            addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The address actually bound (useful after binding port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint URL clients should use.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and waits (up to 5 s) for open ones to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
