//! The `serve` command: builds the AWS upstream from configuration, binds
//! the listener and runs the server until SIGTERM/SIGINT.

use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

use crate::{
    aws::{self, AwsConfigError, AwsJobsUpstream},
    config::ServeArgs,
    jobs::Jobs,
    server::{self, ServeError},
};

/// Why `serve` could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The AWS settings are unusable.
    #[error("configuration error: {0}")]
    Config(#[from] AwsConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (--listen / GATEWAY_LISTEN): {source}")]
    Bind {
        /// The address from `--listen`.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot listen for SIGTERM/SIGINT: {0}")]
    Signals(std::io::Error),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Runs `iot-jobs-gateway serve` until a shutdown signal.
pub async fn serve(args: ServeArgs) -> Result<(), AppError> {
    let settings = args.upstream();
    let sdk = aws::load_sdk_config(&settings).await?;
    let client = aws::iot_client(&sdk, &settings);
    info!(
        region = sdk.region().map(|r| r.as_ref()).unwrap_or_default(),
        endpoint = settings.endpoint_url.as_deref().unwrap_or("AWS default"),
        "AWS IoT upstream configured"
    );
    let jobs = Jobs::new(
        Arc::new(AwsJobsUpstream::new(client)),
        args.retry(),
        args.upstream_operation_timeout,
    );
    let shutdown = server::shutdown_signal().map_err(AppError::Signals)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: args.listen,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| AppError::Bind {
        addr: args.listen,
        source,
    })?;
    info!(%address, "gateway listening");
    server::run(listener, jobs, args.shutdown_grace, shutdown).await?;
    Ok(())
}
