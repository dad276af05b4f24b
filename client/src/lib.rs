//! The controller API client: what `juju` does to reach a controller, small.
//!
//! - [`store`]: `controllers.yaml` and `accounts.yaml` in Juju's shape, written atomically.
//! - [`dial`]: the pure decisions: which addresses are usable, their order after a login,
//!   when each attempt starts.
//! - [`connect`]: the staggered, verified dial and the logged-in connection.
//!
//! [`login`] ties them: read the store, dial the current controller's `api-endpoints` (the
//! last good first), and on success store the `servers` list the controller sent with the
//! address used first.
#![forbid(unsafe_code)]

pub mod connect;
pub mod dial;
pub mod store;

pub use connect::{dial as dial_endpoints, Connection, DialError, DialOptions, RequestError};
pub use store::{Account, ControllerDetails, Controllers, Store, StoreError};

use controller_contract::api::LoginRequest;

/// Why a login through the store failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("controller {controller:?}")]
    Dial {
        controller: String,
        source: DialError,
    },
    #[error(
        "controller {controller:?}: {endpoint} answered as controller {found}, but the store has {stored}"
    )]
    OtherController {
        controller: String,
        endpoint: String,
        found: String,
        stored: String,
    },
}

/// Logs in to `controller` (the current one when `None`) with `account`, or with the
/// stored account when `None`, and stores what the controller sent: its UUID and its usable
/// addresses, the one used first. A given account is stored only once it logged in.
pub async fn login(
    store: &Store,
    controller: Option<&str>,
    account: Option<Account>,
    options: &DialOptions,
) -> Result<(String, Connection), LoginError> {
    let (name, details) = store.controller(controller)?;
    let given = account.is_some();
    let account = match account {
        Some(account) => account,
        None => store.account(&name)?,
    };
    let request = LoginRequest {
        user: Some(account.user.clone()),
        tag: None,
        password: account.password.clone(),
    };
    let connection = connect::dial(&details.api_endpoints, &details.ca_cert, &request, options)
        .await
        .map_err(|source| LoginError::Dial {
            controller: name.clone(),
            source,
        })?;
    let found = &connection.login.controller_uuid;
    if !details.uuid.is_empty() && &details.uuid != found {
        return Err(LoginError::OtherController {
            controller: name,
            endpoint: connection.endpoint.clone(),
            found: found.clone(),
            stored: details.uuid,
        });
    }
    store.update_controllers(|controllers| {
        // A controller removed from the store meanwhile stays removed.
        if let Some(stored) = controllers.controllers.get_mut(&name) {
            stored.api_endpoints = dial::endpoints_after_login(
                &connection.login.servers,
                &connection.endpoint,
                &stored.api_endpoints,
            );
            stored.uuid = found.clone();
            stored.controller_machine_count = connection.login.servers.len();
        }
    })?;
    if given {
        store.update_accounts(|accounts| {
            accounts.controllers.insert(name.clone(), account);
        })?;
    }
    Ok((name, connection))
}
