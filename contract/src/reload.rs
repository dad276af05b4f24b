//! The reload socket: an HTTP/1.1 server on a unix socket, served by the dbaccessor and
//! called by the charm after it rewrites `controller.conf`.

/// `GET` answers the controller's agent id as plain text (`0`), status 200.
pub const AGENT_ID_PATH: &str = "/agent-id";

/// `POST` answers 204 and makes the dbaccessor re-read `controller.conf`.
pub const RELOAD_PATH: &str = "/reload";
