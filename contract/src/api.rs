//! The controller API's JSON bodies (HTTPS on :17070), shared by the API server in the
//! controller agent and the client library: the API boundary between them.
//!
//! - `POST /login` takes a [`LoginRequest`] and answers a [`LoginResult`]: the controller's
//!   identity and the `servers` list (Juju's `params.HostPort`, per controller).
//! - `GET /status`, on a connection that has logged in, answers a [`StatusResult`]: the
//!   controller's view of itself from the controller database.
//! - Every refusal carries an [`ErrorBody`].

use serde::{Deserialize, Serialize};

/// The login request: exactly one of `user` and `tag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// A user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// An agent tag (`machine-3`, `unit-app-0`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Checked against the stored Argon2id hash; never logged.
    pub password: String,
}

/// One address in a login answer (Juju's `params.HostPort`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    /// The IP address, without port or brackets.
    pub value: String,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Juju's scope name (`local-cloud`, `public`, `local-machine`, `link-local`).
    pub scope: String,
    /// The space of the address's subnet; empty while the controller does not know it.
    /// Clients ignore it (`juju-mgmt-space` is for agents).
    #[serde(rename = "space-name")]
    pub space_name: String,
    /// The API port (17070).
    pub port: u16,
}

impl HostPort {
    /// `ip:port`, IPv6 bracketed; `None` when `value` is not an IP address.
    pub fn socket_address(&self) -> Option<std::net::SocketAddr> {
        let ip: std::net::IpAddr = self.value.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, self.port))
    }
}

/// The login answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResult {
    /// The controller's UUID: a client checks it against the one it stored.
    #[serde(rename = "controller-uuid")]
    pub controller_uuid: String,
    /// Per controller (in controller id order), its addresses.
    pub servers: Vec<Vec<HostPort>>,
}

/// The answer of `GET /api-addresses?after=<version>` (a long poll, on a logged-in
/// connection): the controllers' addresses and the management space once they differ from
/// `version`, or as they are after the server's wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiAddressesResult {
    /// The content's version ([`crate::agentaddr::addresses_version`]): the same content
    /// has the same version on every controller.
    pub version: u64,
    /// Per controller (in controller id order), its addresses, each with its space.
    pub servers: Vec<Vec<HostPort>>,
    /// `juju-mgmt-space` (empty: unset).
    #[serde(rename = "mgmt-space")]
    pub mgmt_space: String,
}

/// The body of `POST /controller-config` (a user's login only; agents may not): the keys to
/// set. The answer is the whole controller config, by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfigRequest {
    /// Key -> value; `juju-mgmt-space` must name a known space or be empty.
    pub settings: std::collections::BTreeMap<String, String>,
}

/// `POST /leadership`: claim (or, for its holder, extend) an application's leadership for
/// one of its units. A user may ask for any unit; a unit agent (`unit-<app>-<n>`) only for
/// itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadershipRequest {
    pub application: String,
    /// `<application>/<number>`.
    pub unit: String,
    /// How long the claim or extension grants [default: 60000].
    #[serde(
        rename = "duration-ms",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub duration_ms: Option<u64>,
}

/// The answer to `POST /leadership` and `GET /leadership?application=<name>`: the
/// application's leader as the `application-leadership` lease says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadershipResult {
    pub application: String,
    /// The unit holding the lease (none: nobody holds it now).
    pub leader: Option<String>,
    /// Whether the unit the request named is the leader (`false` for a `GET`).
    #[serde(rename = "is-leader")]
    pub is_leader: bool,
    /// How long the lease still runs by the database's clock (0 without a leader).
    #[serde(rename = "remaining-ms")]
    pub remaining_ms: u64,
    /// The leader's grant's start by the database's clock (with the leader, the lease
    /// token; none without a leader).
    #[serde(rename = "start-ms", default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<i64>,
}

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Why, in words a client can show as they are.
    pub error: String,
}

/// One controller in a status answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerNode {
    /// The controller (agent) id, which is its machine id.
    #[serde(rename = "controller-id")]
    pub controller_id: String,
    /// Its Dqlite node id (as SQLite stores it: a signed 64-bit integer).
    #[serde(rename = "dqlite-node-id")]
    pub dqlite_node_id: i64,
    /// Its Dqlite bind address (`ip:17666`).
    #[serde(rename = "bind-address")]
    pub bind_address: String,
    /// Its published API addresses (`ip:port`), agent-usable or not.
    #[serde(rename = "api-addresses")]
    pub api_addresses: Vec<String>,
}

/// The status answer: the controller database's view of the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResult {
    /// The controller's UUID.
    #[serde(rename = "controller-uuid")]
    pub controller_uuid: String,
    /// The id of the controller that answered.
    #[serde(rename = "answered-by")]
    pub answered_by: String,
    /// The controller database's schema version.
    #[serde(rename = "schema-version")]
    pub schema_version: i64,
    /// Every controller with a row, in controller id order.
    pub controllers: Vec<ControllerNode>,
    /// The controller config (`juju-mgmt-space`, ...), by key.
    #[serde(rename = "controller-config")]
    pub controller_config: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_read_as_juju_writes_them() {
        let json = r#"{"value":"fd00::2","type":"ipv6","scope":"local-cloud","space-name":"alpha","port":17070}"#;
        let host: HostPort = serde_json::from_str(json).expect("a HostPort");
        assert_eq!(
            host.socket_address(),
            Some("[fd00::2]:17070".parse().expect("address"))
        );
        assert_eq!(serde_json::to_string(&host).expect("json"), json);
        let bad = HostPort {
            value: "example.com".into(),
            ..host
        };
        assert_eq!(bad.socket_address(), None);
    }

    #[test]
    fn a_login_request_has_no_unknown_fields() {
        let request: LoginRequest =
            serde_json::from_str(r#"{"user":"admin","password":"x"}"#).expect("a login");
        assert_eq!(request.user.as_deref(), Some("admin"));
        assert_eq!(
            serde_json::to_string(&request).expect("json"),
            r#"{"user":"admin","password":"x"}"#
        );
        assert!(serde_json::from_str::<LoginRequest>(r#"{"password":"x","extra":1}"#).is_err());
    }
}
