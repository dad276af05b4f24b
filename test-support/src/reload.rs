//! A client for the dbaccessor's reload socket (HTTP/1.1 on a unix socket), for tests and
//! benchmarks: the charm writes its own requests, and the daemon only serves.

use std::path::Path;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Why a request on the reload socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot build the request: {0}")]
    Build(#[from] hyper::http::Error),
    #[error("http exchange failed: {0}")]
    Http(#[from] hyper::Error),
}

/// One request on a fresh connection: returns the status code and the body text.
pub async fn request(
    socket: &Path,
    method: Method,
    path: &str,
) -> Result<(u16, String), ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
