//! Opt-in Prometheus endpoint, served only on a loopback address.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::daemon::status::{ContainerStatus, StatusBoard};

/// Error for a metrics address that is not on loopback.
#[derive(Debug, thiserror::Error)]
#[error("invalid metrics address {0}: expected a loopback address such as 127.0.0.1:9184")]
pub struct NotLoopback(pub SocketAddr);

/// Accepts only loopback addresses, because the endpoint has no authentication.
pub fn check_address(address: SocketAddr) -> Result<SocketAddr, NotLoopback> {
    if address.ip().is_loopback() {
        Ok(address)
    } else {
        Err(NotLoopback(address))
    }
}

/// Renders the metrics of every supervised container in the Prometheus text format 0.0.4.
pub fn render(statuses: &[ContainerStatus]) -> String {
    type Sample = fn(&ContainerStatus) -> Option<f64>;
    /// Name, type, help, and the samples as (name suffix, value).
    type Family = (
        &'static str,
        &'static str,
        &'static str,
        &'static [(&'static str, Sample)],
    );
    let families: [Family; 7] = [
        (
            "ckpt_checkpoints_taken_total",
            "counter",
            "Checkpoints taken and stored.",
            &[("", |s| Some(s.checkpoints_taken as f64))],
        ),
        (
            "ckpt_checkpoints_failed_total",
            "counter",
            "Checkpoint attempts that failed.",
            &[("", |s| Some(s.checkpoints_failed as f64))],
        ),
        (
            "ckpt_checkpoint_duration_seconds",
            "summary",
            "Time taken by successful checkpoints, from freeze to verified in the store.",
            &[
                ("_sum", |s| Some(s.checkpoint_seconds_sum)),
                ("_count", |s| Some(s.checkpoint_seconds_count as f64)),
            ],
        ),
        (
            "ckpt_frozen_seconds",
            "gauge",
            "Time the container stayed frozen during its last checkpoint.",
            &[("", |s| Some(s.last_frozen_time_us as f64 / 1e6))],
        ),
        (
            "ckpt_stored_bytes_total",
            "counter",
            "Bytes that checkpoints added to the store since the daemon started.",
            &[("", |s| Some(s.bytes_stored as f64))],
        ),
        (
            "ckpt_last_good_checkpoint_timestamp_seconds",
            "gauge",
            "Unix time of the last good checkpoint.",
            &[("", |s| {
                s.last_good
                    .as_ref()
                    .map(|(_, time)| time.timestamp() as f64)
            })],
        ),
        (
            "ckpt_failures_detected_total",
            "counter",
            "Container failures detected.",
            &[("", |s| Some(s.failures_detected as f64))],
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, samples) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for status in statuses {
            for (suffix, value) in samples {
                if let Some(value) = value(status) {
                    let _ = writeln!(
                        out,
                        "{name}{suffix}{{container=\"{}\"}} {value}",
                        status.container
                    );
                }
            }
        }
    }
    out
}

/// Serves `GET /metrics` until the task is dropped. Every path returns the same metrics.
pub async fn serve(listener: TcpListener, board: Arc<StatusBoard>) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(connection) => connection,
            Err(err) => {
                tracing::warn!(error = %err, "failed to accept metrics connection");
                continue;
            }
        };
        let board = Arc::clone(&board);
        tokio::spawn(async move {
            // The request itself is ignored; reading part of it lets the client finish sending.
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            let body = render(&board.list());
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(err) = stream.write_all(response.as_bytes()).await {
                tracing::debug!(error = %err, peer = %peer, "failed to send metrics");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    #[test]
    fn non_loopback_address_is_rejected() {
        assert!(check_address("127.0.0.1:9184".parse().unwrap()).is_ok());
        assert!(check_address("[::1]:9184".parse().unwrap()).is_ok());
        assert!(check_address("0.0.0.0:9184".parse().unwrap()).is_err());
        assert!(check_address("192.168.1.5:9184".parse().unwrap()).is_err());
    }

    #[test]
    fn render_labels_each_container() {
        let mut web = ContainerStatus::new(
            "web".parse().unwrap(),
            PathBuf::from("/p/web.yaml"),
            Duration::from_secs(30),
        );
        web.checkpoints_taken = 3;
        web.last_frozen_time_us = 25_000;
        web.checkpoint_seconds_sum = 1.5;
        web.checkpoint_seconds_count = 3;
        let text = render(&[web]);
        assert!(
            text.contains("ckpt_checkpoints_taken_total{container=\"web\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("ckpt_frozen_seconds{container=\"web\"} 0.025\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ckpt_failures_detected_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ckpt_checkpoint_duration_seconds summary\n"),
            "{text}"
        );
        assert!(
            text.contains("ckpt_checkpoint_duration_seconds_sum{container=\"web\"} 1.5\n"),
            "{text}"
        );
        assert!(
            text.contains("ckpt_checkpoint_duration_seconds_count{container=\"web\"} 3\n"),
            "{text}"
        );
        // No good checkpoint yet: the timestamp is left out rather than reported as 0.
        assert!(
            !text.contains("ckpt_last_good_checkpoint_timestamp_seconds{"),
            "{text}"
        );
    }
}
