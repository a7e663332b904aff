//! Name resolution and TCP connection set-up, each bounded by the caller's
//! timeout so that a black-holed SIEM cannot stall the pipeline.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::error::TransportError;
use super::url::Target;

/// Runs `work` for at most `after`, reporting `stage` if it takes longer.
pub(crate) async fn within<T>(
    stage: &'static str,
    after: Duration,
    work: impl Future<Output = T>,
) -> Result<T, TransportError> {
    tokio::time::timeout(after, work)
        .await
        .map_err(|_| TransportError::Timeout { stage, after })
}

/// Every address of the target, in the resolver's order.
pub(crate) async fn resolve(
    target: &Target,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, TransportError> {
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    let addrs: Vec<SocketAddr> = within("name resolution", timeout, lookup)
        .await?
        .map_err(|source| TransportError::Resolve {
            host: target.host.clone(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(TransportError::NoAddress {
            host: target.host.clone(),
        });
    }
    Ok(addrs)
}

/// Connects to the first address that accepts; all attempts together take at
/// most `timeout`. The last refusal is reported when none accepts.
pub(crate) async fn connect_tcp(
    target: &Target,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), TransportError> {
    let attempts = async {
        let mut last_error = TransportError::NoAddress {
            host: target.host.clone(),
        };
        for &addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok((stream, addr)),
                Err(source) => last_error = TransportError::Connect { addr, source },
            }
        }
        Err(last_error)
    };
    let (stream, addr) = within("TCP connect", timeout, attempts).await??;
    // Frames are batched by us; waiting for Nagle would only delay RELP acks.
    stream
        .set_nodelay(true)
        .map_err(|source| TransportError::Io {
            stage: "TCP connect",
            peer: addr,
            source,
        })?;
    Ok((stream, addr))
}
