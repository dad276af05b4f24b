//! The staggered dial: attempts start in the stored order (the address that last worked
//! first), a new one every `stagger` while earlier ones are pending, or at once when every
//! attempt so far has failed; the first verified login wins and the others are dropped;
//! one overall timeout. An attempt is TCP, TLS verified against the controller's CA only
//! (the certificate must name the IP dialled), then `POST /login` on that connection.
//!
//! A refused password (401) ends the dial: a controller that proved itself with the CA
//! said no, and the others share its credentials. Every other failure is one address's:
//! the error, when no attempt succeeds, names each address and why.
//!
//! The dial order goes to the debug log (`dialing <address> (n of m, at +t ms)`).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use controller_contract::api::{
    ApiAddressesResult, ErrorBody, LoginRequest, LoginResult, StatusResult,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::dial::dial_schedule;

/// How a client dials.
#[derive(Debug, Clone)]
pub struct DialOptions {
    /// The pause before the next address is tried while earlier attempts are pending.
    pub stagger: Duration,
    /// The whole dial, every attempt included.
    pub timeout: Duration,
}

impl Default for DialOptions {
    fn default() -> Self {
        Self {
            stagger: Duration::from_millis(200),
            timeout: Duration::from_secs(20),
        }
    }
}

/// The largest answer read from the API server.
const MAX_ANSWER: usize = 1024 * 1024;

/// Why a dial found no controller.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("the stored CA certificate is unusable: {0}")]
    BadCaCert(String),
    #[error("no API addresses to dial")]
    NoEndpoints,
    #[error("{endpoint} refused the login: {message}")]
    Unauthorized { endpoint: String, message: String },
    #[error("cannot connect to any API address: {}", Failures(.0))]
    AllFailed(Vec<(String, String)>),
}

/// `address: why; address: why`.
struct Failures<'a>(&'a [(String, String)]);

impl fmt::Display for Failures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (endpoint, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{endpoint}: {why}")?;
        }
        Ok(())
    }
}

/// Why a request on a logged-in connection failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{endpoint}: {why}")]
    Failed { endpoint: String, why: String },
}

/// A logged-in connection to one controller.
pub struct Connection {
    /// The address that answered, as stored.
    pub endpoint: String,
    /// The login's answer.
    pub login: LoginResult,
    sender: SendRequest<Full<Bytes>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint)
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// `GET /api-addresses` on this connection: the address watch. With `after`, the server
    /// answers once the list's version differs from it, or after its long poll; `timeout`
    /// must be longer than that wait.
    pub async fn api_addresses(
        &mut self,
        after: Option<u64>,
        timeout: Duration,
    ) -> Result<ApiAddressesResult, RequestError> {
        let path = match after {
            Some(version) => format!("/api-addresses?after={version}"),
            None => "/api-addresses".to_owned(),
        };
        self.get(&path, timeout).await
    }

    /// `POST /controller-config` on this connection (a user's login): sets `settings` and
    /// answers the whole controller config. A refused setting is the server's error
    /// (`HTTP 400: cannot set juju-mgmt-space: space "x" not found ...`).
    pub async fn set_controller_config(
        &mut self,
        settings: &std::collections::BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<std::collections::BTreeMap<String, String>, RequestError> {
        let failed = |why: String| RequestError::Failed {
            endpoint: self.endpoint.clone(),
            why,
        };
        let body = serde_json::to_vec(&controller_contract::api::ControllerConfigRequest {
            settings: settings.clone(),
        })
        .expect("a config request serializes");
        let answer = tokio::time::timeout(
            timeout,
            request(
                &mut self.sender,
                &self.endpoint,
                "POST",
                "/controller-config",
                Bytes::from(body),
            ),
        )
        .await
        .map_err(|_| {
            failed(format!(
                "no answer to /controller-config within {timeout:?}"
            ))
        })?
        .map_err(failed)?;
        match answer {
            (200, body) => serde_json::from_slice(&body)
                .map_err(|e| failed(format!("malformed answer to /controller-config: {e}"))),
            (status, body) => Err(failed(refusal(status, &body))),
        }
    }

    /// `POST /leadership` on this connection (a unit agent's login: for its own unit):
    /// claims the application's leadership for the unit, or extends it when the unit holds
    /// it, and answers who leads now.
    pub async fn claim_leadership(
        &mut self,
        claim: &controller_contract::api::LeadershipRequest,
        timeout: Duration,
    ) -> Result<controller_contract::api::LeadershipResult, RequestError> {
        let body = serde_json::to_vec(claim).expect("a leadership claim serializes");
        self.post("/leadership", Bytes::from(body), timeout).await
    }

    /// A `POST` of `body` on this connection and its JSON answer.
    async fn post<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<T, RequestError> {
        let failed = |why: String| RequestError::Failed {
            endpoint: self.endpoint.clone(),
            why,
        };
        let answer = tokio::time::timeout(
            timeout,
            request(&mut self.sender, &self.endpoint, "POST", path, body),
        )
        .await
        .map_err(|_| failed(format!("no answer to {path} within {timeout:?}")))?
        .map_err(failed)?;
        match answer {
            (200, body) => serde_json::from_slice(&body)
                .map_err(|e| failed(format!("malformed answer to {path}: {e}"))),
            (status, body) => Err(failed(refusal(status, &body))),
        }
    }

    /// `GET /status` on this connection.
    pub async fn status(&mut self, timeout: Duration) -> Result<StatusResult, RequestError> {
        self.get("/status", timeout).await
    }

    /// A `GET` on this connection and its JSON answer.
    async fn get<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, RequestError> {
        let failed = |why: String| RequestError::Failed {
            endpoint: self.endpoint.clone(),
            why,
        };
        let answer = tokio::time::timeout(
            timeout,
            request(&mut self.sender, &self.endpoint, "GET", path, Bytes::new()),
        )
        .await
        .map_err(|_| failed(format!("no answer to {path} within {timeout:?}")))?
        .map_err(failed)?;
        match answer {
            (200, body) => serde_json::from_slice(&body)
                .map_err(|e| failed(format!("malformed answer to {path}: {e}"))),
            (status, body) => Err(failed(refusal(status, &body))),
        }
    }
}

/// The TLS configuration trusting only `ca_pem`.
pub fn tls_connector(ca_pem: &str) -> Result<tokio_rustls::TlsConnector, DialError> {
    let bad = |e: &dyn fmt::Display| DialError::BadCaCert(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        count += 1;
    }
    if count == 0 {
        return Err(DialError::BadCaCert("no certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Dials `endpoints` (stored order) and logs in with `login`; the first verified login wins.
pub async fn dial(
    endpoints: &[String],
    ca_pem: &str,
    login: &LoginRequest,
    options: &DialOptions,
) -> Result<Connection, DialError> {
    let connector = tls_connector(ca_pem)?;
    let attempts = dial_schedule(endpoints, options.stagger);
    if attempts.is_empty() {
        return Err(DialError::NoEndpoints);
    }
    let body = Bytes::from(serde_json::to_vec(login).expect("a login request serializes"));
    let started = Instant::now();
    let deadline = started + options.timeout;
    let mut outcomes: Vec<Option<String>> = vec![None; attempts.len()];
    let mut running = JoinSet::new();
    let mut next = 0;
    loop {
        // Start every attempt that is due, and the next one if nothing is pending.
        while next < attempts.len()
            && (started.elapsed() >= attempts[next].start_after || running.is_empty())
        {
            let attempt = &attempts[next];
            log::debug!(
                "dialing {} ({} of {}, at +{} ms)",
                attempt.endpoint,
                next + 1,
                attempts.len(),
                started.elapsed().as_millis()
            );
            let index = next;
            let endpoint = attempt.endpoint.clone();
            let address = attempt.address;
            let connector = connector.clone();
            let body = body.clone();
            running.spawn(async move {
                let result = match address {
                    Some(address) => try_login(address, &endpoint, connector, body).await,
                    None => Err(Failure::Other("not an ip:port address".into())),
                };
                (index, endpoint, result)
            });
            next += 1;
        }
        if running.is_empty() {
            break;
        }
        let wake = attempts
            .get(next)
            .map_or(deadline, |a| (started + a.start_after).min(deadline));
        tokio::select! {
            joined = running.join_next() => match joined {
                Some(Ok((_, endpoint, Ok((sender, result))))) => {
                    log::debug!(
                        "logged in through {endpoint} in {} ms",
                        started.elapsed().as_millis()
                    );
                    // The other attempts are dropped, with their connections.
                    running.abort_all();
                    return Ok(Connection { endpoint, login: result, sender });
                }
                Some(Ok((_, endpoint, Err(Failure::Unauthorized(message))))) => {
                    running.abort_all();
                    return Err(DialError::Unauthorized { endpoint, message });
                }
                Some(Ok((index, endpoint, Err(Failure::Other(why))))) => {
                    log::debug!("{endpoint} failed: {why}");
                    outcomes[index] = Some(why);
                }
                Some(Err(e)) => log::warn!("a dial attempt ended abnormally: {e}"),
                None => {}
            },
            () = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    running.abort_all();
    let failures = attempts
        .iter()
        .zip(outcomes)
        .enumerate()
        .map(|(index, (attempt, outcome))| {
            let why = outcome.unwrap_or_else(|| {
                if index < next {
                    format!("no answer within {:?}", options.timeout)
                } else {
                    format!("not dialled: the {:?} timeout came first", options.timeout)
                }
            });
            (attempt.endpoint.clone(), why)
        })
        .collect();
    Err(DialError::AllFailed(failures))
}

/// How one attempt failed.
enum Failure {
    /// The controller refused the credentials (401).
    Unauthorized(String),
    /// Anything else: this address is no good now.
    Other(String),
}

/// TCP, TLS (the certificate must chain to the CA and name `address`'s IP), HTTP/1.1,
/// `POST /login`.
async fn try_login(
    address: SocketAddr,
    endpoint: &str,
    connector: tokio_rustls::TlsConnector,
    body: Bytes,
) -> Result<(SendRequest<Full<Bytes>>, LoginResult), Failure> {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| Failure::Other(format!("connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let tls = connector
        .connect(ServerName::IpAddress(address.ip().into()), tcp)
        .await
        .map_err(|e| Failure::Other(format!("TLS: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| Failure::Other(format!("HTTP: {e}")))?;
    // The connection is driven here until the sender goes.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            log::debug!("API connection ended: {e}");
        }
    });
    match request(&mut sender, endpoint, "POST", "/login", body).await {
        Ok((200, body)) => match serde_json::from_slice::<LoginResult>(&body) {
            Ok(result) => Ok((sender, result)),
            Err(e) => Err(Failure::Other(format!("malformed login answer: {e}"))),
        },
        Ok((401, body)) => Err(Failure::Unauthorized(refusal(401, &body))),
        Ok((status, body)) => Err(Failure::Other(refusal(status, &body))),
        Err(why) => Err(Failure::Other(why)),
    }
}

/// `HTTP 503: <the server's error>`.
fn refusal(status: u16, body: &[u8]) -> String {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).chars().take(200).collect());
    format!("HTTP {status}: {message}")
}

/// One request and its whole answer (bounded).
async fn request(
    sender: &mut SendRequest<Full<Bytes>>,
    endpoint: &str,
    method: &str,
    path: &str,
    body: Bytes,
) -> Result<(u16, Vec<u8>), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection closed: {e}"))?;
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, endpoint)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("answer: {e}"))?
        .to_bytes()
        .to_vec();
    Ok((status, body))
}
