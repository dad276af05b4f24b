//! The reload socket: an HTTP/1.1 server (hyper) on a unix socket. `GET /agent-id` answers
//! the controller id; `POST /reload` answers 204 and queues a [`Event::ConfigChanged`].

use std::convert::Infallible;
use std::sync::Arc;

use controller_contract::reload::{AGENT_ID_PATH, RELOAD_PATH};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use crate::event::{Event, Trigger};
use crate::unix::MAX_CONNECTIONS;

/// Serves the reload routes until `stop` turns true.
pub async fn serve(
    listener: UnixListener,
    agent_id: String,
    events: mpsc::Sender<Event>,
    stop: watch::Receiver<bool>,
) {
    let agent_id: Arc<str> = agent_id.into();
    let handle = move |stream: UnixStream| {
        let agent_id = agent_id.clone();
        let events = events.clone();
        async move {
            let service = service_fn(move |request| {
                let agent_id = agent_id.clone();
                let events = events.clone();
                async move { Ok::<_, Infallible>(route(&request, &agent_id, &events).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                log::debug!("reload socket: connection ended with an error: {e}");
            }
        }
    };
    crate::unix::serve_connections("reload socket", listener, MAX_CONNECTIONS, stop, handle).await;
}

async fn route(
    request: &Request<Incoming>,
    agent_id: &str,
    events: &mpsc::Sender<Event>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    match (request.method(), path) {
        (&Method::GET, AGENT_ID_PATH) => Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(agent_id.to_owned()))),
        (&Method::POST, RELOAD_PATH) => {
            log::info!("reload requested on the reload socket");
            match events.send(Event::ConfigChanged(Trigger::Reload)).await {
                Ok(()) => Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Full::new(Bytes::new())),
                // The service loop is gone: the daemon is shutting down.
                Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
            }
        }
        (_, AGENT_ID_PATH) => not_allowed("GET"),
        (_, RELOAD_PATH) => not_allowed("POST"),
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
    .unwrap_or_else(|e| {
        log::error!("reload socket: cannot build a response: {e}");
        Response::new(Full::new(Bytes::new()))
    })
}

fn not_allowed(allow: &str) -> Result<Response<Full<Bytes>>, hyper::http::Error> {
    Response::builder()
        .status(StatusCode::METHOD_NOT_ALLOWED)
        .header(ALLOW, allow)
        .body(Full::new(Bytes::from("method not allowed\n")))
}

fn plain(status: StatusCode, text: &str) -> Result<Response<Full<Bytes>>, hyper::http::Error> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn routes_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("configchange.socket");
        let listener = crate::unix::bind_private(&path).expect("bind");
        let (events_tx, mut events_rx) = mpsc::channel(8);
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, "7".into(), events_tx, stop_rx));

        let check = |method: Method, route: &'static str, expected: (u16, &'static str)| {
            let path = path.clone();
            async move {
                let got = tokio::time::timeout(
                    Duration::from_secs(5),
                    test_support::reload::request(&path, method.clone(), route),
                )
                .await
                .expect("answer within 5 s")
                .expect("request succeeds");
                assert_eq!((got.0, got.1.as_str()), expected, "{method} {route}");
            }
        };
        check(Method::GET, "/agent-id", (200, "7")).await;
        check(Method::POST, "/reload", (204, "")).await;
        check(Method::GET, "/reload", (405, "method not allowed\n")).await;
        check(Method::POST, "/agent-id", (405, "method not allowed\n")).await;
        check(Method::GET, "/other", (404, "not found\n")).await;

        // Exactly one reload event came out of those requests.
        let event = events_rx.try_recv().expect("one event");
        assert!(matches!(event, Event::ConfigChanged(Trigger::Reload)));
        assert!(events_rx.try_recv().is_err());

        stop_tx.send(true).expect("server listens");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops")
            .expect("server task ends cleanly");
    }
}
