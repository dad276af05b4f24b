//! The status socket from async tests: the contract's one client
//! (`controller_contract::status::client`) on a blocking thread, so that a test can ask a
//! daemon served by its own runtime.

use std::path::Path;
use std::time::Duration;

pub use controller_contract::status::client::ClientError;
use controller_contract::status::{Request, Status};
use serde::de::DeserializeOwned;

/// Sends one request and reads the answer as `T` (a refusal comes back as
/// [`ClientError::Refused`] with the daemon's words); `timeout` bounds each write and read.
pub async fn request<T: DeserializeOwned + Send + 'static>(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T, ClientError> {
    let socket = socket.to_owned();
    let request = request.clone();
    tokio::task::spawn_blocking(move || {
        controller_contract::status::client::ask(&socket, &request, timeout)
    })
    .await
    .expect("the status request's thread does not panic")
}

/// Asks for the status once.
pub async fn status(socket: &Path, timeout: Duration) -> Result<Status, ClientError> {
    request(socket, &Request::Status, timeout).await
}
