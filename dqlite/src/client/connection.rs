//! One connection to one node: the handshake, framing with timeouts, and one method per
//! request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{Error, ExecResult, Leader, Metadata, Options, Rows};
use crate::wire::{File, Header, Request, Response, Value, HEADER_SIZE, PROTOCOL_VERSION};
use crate::{NodeInfo, NodeRole};

/// A TCP connection (plain or TLS) or one to an abstract unix socket (`@name`), which is how
/// a node bound to a unix socket is reached.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl Stream {
    /// Whether the peer has already closed (or sent something unasked) while no request was
    /// in flight: then a request sent now could not be answered, and it is safe to reconnect
    /// and send it elsewhere.
    fn is_stale(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let result = match self {
            Stream::Tcp(s) => s.try_read(&mut probe),
            Stream::Unix(s) => s.try_read(&mut probe),
            // Raw bytes on the socket may be TLS records that carry no data (a key update):
            // read through TLS once, without waiting; only data or a close counts.
            Stream::Tls(s) => {
                let mut buf = ReadBuf::new(&mut probe);
                let mut context = Context::from_waker(std::task::Waker::noop());
                match Pin::new(s.as_mut()).poll_read(&mut context, &mut buf) {
                    Poll::Pending => return false,
                    Poll::Ready(result) => result.map(|()| buf.filled().len()),
                }
            }
        };
        !matches!(result, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// One protocol connection to one node. One request is in flight at a time; a request whose
/// future is dropped midway (for example by an outer timeout) leaves the connection
/// [`Error::Broken`], because the answer to it could still arrive.
#[derive(Debug)]
pub struct Connection {
    /// Buffered so that a header and a small body usually arrive in one read.
    stream: BufReader<Stream>,
    /// The address as given to `connect`: what errors name and what leader checks compare.
    address: String,
    options: Options,
    /// Reused for every encoded request and every received body.
    buf: Vec<u8>,
    /// Set while a request is in flight; still set afterwards means it was abandoned.
    in_flight: bool,
}

impl Connection {
    /// Connects to `address` (`ip:port`, `[ipv6]:port`, `host:port`, or `@abstract-socket`)
    /// and sends the protocol version. With [`Options::tls`], a TCP connection is TLS: the
    /// node must present a certificate of the CA naming the address's IP (or host), and
    /// the client presents its own; the handshake counts towards the connect timeout.
    pub async fn connect(address: &str, options: &Options) -> Result<Connection, Error> {
        let stream = tokio::time::timeout(options.connect_timeout, open_stream(address, options))
            .await
            .map_err(|_| Error::ConnectTimeout {
                address: address.to_owned(),
                timeout: options.connect_timeout,
            })?
            .map_err(|source| Error::Connect {
                address: address.to_owned(),
                source,
            })?;
        let mut connection = Connection {
            stream: BufReader::new(stream),
            address: address.to_owned(),
            options: options.clone(),
            buf: Vec::with_capacity(4096),
            in_flight: false,
        };
        let handshake = PROTOCOL_VERSION.to_le_bytes();
        connection.send_bytes(&handshake).await?;
        Ok(connection)
    }

    /// The address this connection was opened to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the connection can carry another request: nothing was abandoned midway and the
    /// peer has not closed it.
    pub fn is_usable(&mut self) -> bool {
        !self.in_flight && self.stream.buffer().is_empty() && !self.stream.get_mut().is_stale()
    }

    /// Asks the node whom it believes is the leader; `None` when it knows of none.
    pub async fn leader(&mut self) -> Result<Option<Leader>, Error> {
        match self.call("leader", &Request::Leader).await? {
            Response::Server { address, .. } if address.is_empty() => Ok(None),
            Response::Server { id, address } => Ok(Some(Leader { id, address })),
            other => Err(self.unexpected("leader", &other)),
        }
    }

    /// Opens the database `name` (creating it if needed) and returns its id on this
    /// connection.
    pub async fn open(&mut self, name: &str) -> Result<u32, Error> {
        let request = Request::Open {
            name: name.to_owned(),
            flags: 0,
            vfs: String::new(),
        };
        match self.call("open", &request).await? {
            Response::Db { id } => Ok(id),
            other => Err(self.unexpected("open", &other)),
        }
    }

    /// Runs a statement that returns no rows on database `db` (an id from [`open`]).
    ///
    /// [`open`]: Connection::open
    pub async fn exec(
        &mut self,
        db: u32,
        sql: &str,
        params: &[Value],
    ) -> Result<ExecResult, Error> {
        let request = Request::ExecSql {
            db,
            sql: sql.to_owned(),
            params: params.iter().map(wire_param).collect(),
        };
        match self.call("exec", &request).await? {
            Response::Result {
                last_insert_id,
                rows_affected,
            } => Ok(ExecResult {
                last_insert_id,
                rows_affected,
            }),
            other => Err(self.unexpected("exec", &other)),
        }
    }

    /// Runs a query on database `db` and gathers every batch of its rows.
    pub async fn query(&mut self, db: u32, sql: &str, params: &[Value]) -> Result<Rows, Error> {
        let request = Request::QuerySql {
            db,
            sql: sql.to_owned(),
            params: params.iter().map(wire_param).collect(),
        };
        let mut rows = Rows::default();
        let mut response = self.call("query", &request).await?;
        loop {
            let batch = match response {
                Response::Rows(batch) => batch,
                other => return Err(self.unexpected("query", &other)),
            };
            rows.columns = batch.columns;
            rows.rows.extend(
                batch
                    .rows
                    .into_iter()
                    .map(|row| row.into_iter().map(row_value).collect()),
            );
            if !batch.more {
                return Ok(rows);
            }
            // Still the same request: the node sends the next batch unasked.
            self.in_flight = true;
            response = self.receive("query").await?;
            self.in_flight = false;
        }
    }

    /// The cluster's configuration as this node knows it.
    pub async fn cluster(&mut self) -> Result<Vec<NodeInfo>, Error> {
        match self.call("cluster", &Request::Cluster).await? {
            Response::Servers(nodes) => Ok(nodes),
            other => Err(self.unexpected("cluster", &other)),
        }
    }

    /// Adds node `id` at `address` as a spare (leader only).
    pub async fn add(&mut self, id: u64, address: &str) -> Result<(), Error> {
        let request = Request::Add {
            id,
            address: address.to_owned(),
        };
        self.call_empty("add", &request).await
    }

    /// Gives node `id` a new role; answered once the node has caught up (leader only).
    pub async fn assign(&mut self, id: u64, role: NodeRole) -> Result<(), Error> {
        self.call_empty("assign", &Request::Assign { id, role })
            .await
    }

    /// Removes node `id` from the configuration (leader only). Removing the last voter is
    /// accepted by libdqlite 1.11 and kills the cluster: callers must guard against it.
    pub async fn remove(&mut self, id: u64) -> Result<(), Error> {
        self.call_empty("remove", &Request::Remove { id }).await
    }

    /// Hands leadership to voter `id` (leader only).
    pub async fn transfer(&mut self, id: u64) -> Result<(), Error> {
        self.call_empty("transfer", &Request::Transfer { id }).await
    }

    /// This node's failure domain and weight.
    pub async fn describe(&mut self) -> Result<Metadata, Error> {
        match self.call("describe", &Request::Describe).await? {
            Response::Metadata {
                failure_domain,
                weight,
            } => Ok(Metadata {
                failure_domain,
                weight,
            }),
            other => Err(self.unexpected("describe", &other)),
        }
    }

    /// Sets this node's weight (used by leader election preferences).
    pub async fn weight(&mut self, weight: u64) -> Result<(), Error> {
        self.call_empty("weight", &Request::Weight { weight }).await
    }

    /// The files of database `name`: the database file and its write-ahead log.
    pub async fn dump(&mut self, name: &str) -> Result<Vec<File>, Error> {
        let request = Request::Dump {
            name: name.to_owned(),
        };
        match self.call("dump", &request).await? {
            Response::Files(files) => Ok(files),
            other => Err(self.unexpected("dump", &other)),
        }
    }

    async fn call_empty(&mut self, what: &'static str, request: &Request) -> Result<(), Error> {
        match self.call(what, request).await? {
            Response::Empty => Ok(()),
            other => Err(self.unexpected(what, &other)),
        }
    }

    /// Sends a request and reads its (first) response; a FAILURE becomes [`Error::Failure`].
    async fn call(&mut self, what: &'static str, request: &Request) -> Result<Response, Error> {
        if self.in_flight {
            return Err(Error::Broken {
                address: self.address.clone(),
            });
        }
        self.buf.clear();
        request.encode(&mut self.buf).map_err(Error::Encode)?;
        self.in_flight = true;
        let buf = std::mem::take(&mut self.buf);
        let sent = self.send_bytes(&buf).await;
        self.buf = buf;
        sent?;
        let response = self.receive(what).await?;
        self.in_flight = false;
        Ok(response)
    }

    async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let timeout = self.options.request_timeout;
        let stream = self.stream.get_mut();
        match tokio::time::timeout(timeout, stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(Error::Send {
                address: self.address.clone(),
                source,
            }),
            Err(_) => Err(self.timeout()),
        }
    }

    /// Reads one response: the header, a size check, then the body.
    async fn receive(&mut self, what: &'static str) -> Result<Response, Error> {
        let mut header = [0u8; HEADER_SIZE];
        self.read_exact_timed(&mut header).await?;
        let header = Header::decode(header);
        let len = header.body_len();
        if len > self.options.max_message_size {
            return Err(Error::MessageTooLarge {
                address: self.address.clone(),
                bytes: len,
                limit: self.options.max_message_size,
            });
        }
        let mut body = std::mem::take(&mut self.buf);
        // `len` is at most `max_message_size`, which fits in memory by the caller's choice.
        body.resize(len as usize, 0);
        let read = self.read_exact_timed(&mut body).await;
        let decoded = read.and_then(|()| {
            Response::decode(&header, &body).map_err(|source| Error::Decode {
                address: self.address.clone(),
                source,
            })
        });
        self.buf = body;
        match decoded? {
            Response::Failure { code, message } => {
                // The request is over: the connection stays usable.
                self.in_flight = false;
                Err(Error::Failure {
                    address: self.address.clone(),
                    request: what,
                    code,
                    message,
                })
            }
            response => Ok(response),
        }
    }

    async fn read_exact_timed(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        let timeout = self.options.request_timeout;
        match tokio::time::timeout(timeout, self.stream.read_exact(buf)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(Error::Receive {
                address: self.address.clone(),
                source,
            }),
            Err(_) => Err(self.timeout()),
        }
    }

    fn timeout(&self) -> Error {
        Error::Timeout {
            address: self.address.clone(),
            timeout: self.options.request_timeout,
        }
    }

    fn unexpected(&mut self, request: &'static str, response: &Response) -> Error {
        // A well-formed but unexpected message may be followed by more (a stray ROWS batch):
        // the stream's position is unknown, so the connection is not reused.
        self.in_flight = true;
        Error::UnexpectedResponse {
            address: self.address.clone(),
            request,
            kind: response.type_code(),
        }
    }
}

/// A parameter as nodes accept it: libdqlite 1.11 refuses the UNIXTIME type code in a
/// parameter (failure 1005), and SQLite stores an integer the same way, so it goes as one.
fn wire_param(value: &Value) -> Value {
    match value {
        Value::UnixTime(seconds) => Value::Integer(*seconds),
        other => other.clone(),
    }
}

/// A row value as applications expect it: a NULL in a date/time column arrives as an empty
/// ISO-8601 string, which go-dqlite also reads as NULL.
fn row_value(value: Value) -> Value {
    match value {
        Value::Iso8601(text) if text.is_empty() => Value::Null,
        other => other,
    }
}

async fn open_stream(address: &str, options: &Options) -> io::Result<Stream> {
    if let Some(name) = address.strip_prefix('@') {
        return connect_abstract(name).map(Stream::Unix);
    }
    let stream = TcpStream::connect(address).await?;
    // Requests are small and latency-bound: never wait to coalesce them.
    stream.set_nodelay(true)?;
    let Some(tls) = &options.tls else {
        return Ok(Stream::Tcp(stream));
    };
    let name = crate::tls::server_name(address).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address names no host to check the certificate against",
        )
    })?;
    let stream = TlsConnector::from(tls.client_config())
        .connect(name, stream)
        .await?;
    Ok(Stream::Tls(Box::new(stream)))
}

/// Connects to a Linux abstract unix socket. The connect cannot block for long (the socket is
/// local), so it is done synchronously and the stream handed to tokio.
#[cfg(target_os = "linux")]
fn connect_abstract(name: &str) -> io::Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let stream = std::os::unix::net::UnixStream::connect_addr(&address)?;
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}

#[cfg(not(target_os = "linux"))]
fn connect_abstract(_name: &str) -> io::Result<UnixStream> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}
