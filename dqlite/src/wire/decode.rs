//! Decoding of protocol-version-1 bytes into typed requests and responses.
//!
//! Every read goes through [`Reader`], which checks the remaining length before it slices, and
//! every count read from the wire is compared with the bytes left before anything is allocated
//! for it.

use super::encode::{DONE_MARKER, MORE_MARKER};
use super::{
    request_type as rq, response_type as rs, value_type as vt, File, Request, Response, RowsBatch,
    Value, CLUSTER_FORMAT, DESCRIBE_FORMAT, HEADER_SIZE, WORD,
};
use crate::{NodeInfo, NodeRole};

/// A message header: the body's length in words, the message type and its revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Body length in 8-byte words.
    pub words: u32,
    /// Request or response type code.
    pub kind: u8,
    /// The body's schema revision (1 only for a request with a 32-bit parameter count).
    pub revision: u8,
}

impl Header {
    /// Reads a header. Any 8 bytes are a header; the body decoder judges whether it fits.
    pub fn decode(bytes: [u8; HEADER_SIZE]) -> Header {
        Header {
            words: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            kind: bytes[4],
            revision: bytes[5],
        }
    }

    /// The header's bytes (the two unused bytes are zero).
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let w = self.words.to_le_bytes();
        [w[0], w[1], w[2], w[3], self.kind, self.revision, 0, 0]
    }

    /// The body's length in bytes, as the header claims it.
    pub fn body_len(&self) -> u64 {
        u64::from(self.words) * WORD as u64
    }
}

/// Why bytes could not be decoded into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message body is empty")]
    EmptyBody,
    #[error("message body of {len} bytes does not match the header's {words} words")]
    BodyLength { words: u32, len: usize },
    #[error("truncated {what}: {needed} bytes needed, {remaining} left")]
    Truncated {
        what: &'static str,
        needed: u64,
        remaining: usize,
    },
    #[error("non-zero padding after {what}")]
    BadPadding { what: &'static str },
    #[error("unknown value type code {code}")]
    UnknownValueType { code: u8 },
    #[error("unknown message type code {kind}")]
    UnknownMessageType { kind: u8 },
    #[error("{what} count {count} exceeds the {remaining} bytes left in the body")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        remaining: usize,
    },
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("{what} has no terminating NUL byte")]
    MissingNul { what: &'static str },
    #[error("unknown node role code {code}")]
    UnknownRole { code: u64 },
    #[error("{what} {value} is out of range")]
    OutOfRange { what: &'static str, value: u64 },
    #[error("unsupported {what} format {format}")]
    UnsupportedFormat { what: &'static str, format: u64 },
    #[error("expected an end-of-rows marker, found {word:#018x}")]
    BadMarker { word: u64 },
    #[error("{count} unexpected bytes after a message of type {kind}")]
    TrailingBytes { kind: u8, count: usize },
}

/// A cursor over one message body. The body starts word-aligned, so alignment is measured from
/// its start.
struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(body: &'a [u8]) -> Self {
        Reader { body, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.body.len() - self.pos
    }

    fn take(&mut self, len: u64, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        let len_usize = usize::try_from(len)
            .ok()
            .filter(|len| *len <= remaining)
            .ok_or(DecodeError::Truncated {
                what,
                needed: len,
                remaining,
            })?;
        let bytes = &self.body[self.pos..self.pos + len_usize];
        self.pos += len_usize;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    /// The next word without consuming it.
    fn peek_u64(&self, what: &'static str) -> Result<u64, DecodeError> {
        let bytes = self
            .body
            .get(self.pos..self.pos + WORD)
            .ok_or(DecodeError::Truncated {
                what,
                needed: WORD as u64,
                remaining: self.remaining(),
            })?;
        let mut word = [0; WORD];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    /// Skips to the next word boundary; the skipped bytes must be zero.
    fn pad(&mut self, what: &'static str) -> Result<(), DecodeError> {
        let used = self.pos % WORD;
        if used == 0 {
            return Ok(());
        }
        let padding = self.take((WORD - used) as u64, what)?;
        if padding.iter().any(|b| *b != 0) {
            return Err(DecodeError::BadPadding { what });
        }
        Ok(())
    }

    fn text(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let rest = &self.body[self.pos..];
        let nul = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(DecodeError::MissingNul { what })?;
        let text = std::str::from_utf8(&rest[..nul])
            .map_err(|_| DecodeError::InvalidUtf8 { what })?
            .to_owned();
        self.pos += nul + 1;
        self.pad(what)?;
        Ok(text)
    }

    fn blob(&mut self, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        let len = self.u64(what)?;
        let data = self.take(len, what)?.to_vec();
        self.pad(what)?;
        Ok(data)
    }

    /// A count of items each at least `min_item_bytes` long, checked against the bytes left so
    /// that no caller reserves memory for items that cannot be there.
    fn count(&mut self, what: &'static str, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let count = self.u64(what)?;
        self.check_count(what, count, min_item_bytes)
    }

    fn check_count(
        &self,
        what: &'static str,
        count: u64,
        min_item_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let remaining = self.remaining();
        let fits = (remaining / min_item_bytes) as u64;
        if count > fits {
            return Err(DecodeError::CountTooLarge {
                what,
                count,
                remaining,
            });
        }
        Ok(count as usize)
    }

    fn role(&mut self) -> Result<NodeRole, DecodeError> {
        let code = self.u64("node role")?;
        NodeRole::from_code(code).ok_or(DecodeError::UnknownRole { code })
    }

    fn value(&mut self, code: u8) -> Result<Value, DecodeError> {
        Ok(match code {
            vt::INTEGER => Value::Integer(self.i64("integer value")?),
            vt::FLOAT => Value::Float(f64::from_bits(self.u64("float value")?)),
            vt::TEXT => Value::Text(self.text("text value")?),
            vt::BLOB => Value::Blob(self.blob("blob value")?),
            vt::NULL => {
                self.u64("null value")?;
                Value::Null
            }
            vt::UNIXTIME => Value::UnixTime(self.i64("unixtime value")?),
            vt::ISO8601 => Value::Iso8601(self.text("iso8601 value")?),
            vt::BOOLEAN => Value::Boolean(self.u64("boolean value")? != 0),
            code => return Err(DecodeError::UnknownValueType { code }),
        })
    }

    /// A parameter tuple, or none when the body ends here (the tuple is omitted when empty).
    fn params(&mut self, revision: u8) -> Result<Vec<Value>, DecodeError> {
        if self.remaining() == 0 {
            return Ok(Vec::new());
        }
        let count = if revision == 0 {
            u64::from(self.u8("parameter count")?)
        } else {
            u64::from(self.u32("parameter count")?)
        };
        // One type byte and at least one word of value each.
        let count = self.check_count("parameter", count, 1 + WORD)?;
        let types = self.take(count as u64, "parameter types")?;
        self.pad("parameter types")?;
        let mut params = Vec::with_capacity(count);
        for code in types {
            params.push(self.value(*code)?);
        }
        Ok(params)
    }

    fn rows(&mut self) -> Result<RowsBatch, DecodeError> {
        let width = self.count("column", WORD)?;
        let mut columns = Vec::with_capacity(width);
        for _ in 0..width {
            columns.push(self.text("column name")?);
        }
        let mut rows = Vec::new();
        let more = loop {
            let word = self.peek_u64("end-of-rows marker")?;
            if word == DONE_MARKER || word == MORE_MARKER {
                self.pos += WORD;
                break word == MORE_MARKER;
            }
            if width == 0 {
                // No columns means a zero-length row header: only a marker can follow.
                return Err(DecodeError::BadMarker { word });
            }
            rows.push(self.row(width)?);
        };
        Ok(RowsBatch {
            columns,
            rows,
            more,
        })
    }

    /// One row: `width` 4-bit type codes (low nibble first, zero-padded to a word), then the
    /// values.
    fn row(&mut self, width: usize) -> Result<Vec<Value>, DecodeError> {
        let header = self.take(width.div_ceil(2) as u64, "row header")?;
        self.pad("row header")?;
        if width % 2 == 1 && header[width / 2] >> 4 != 0 {
            return Err(DecodeError::BadPadding { what: "row header" });
        }
        // Every value is at least a word: refuse before reserving room for the row.
        self.check_count("row value", width as u64, WORD)?;
        let mut row = Vec::with_capacity(width);
        for index in 0..width {
            let byte = header[index / 2];
            let code = if index % 2 == 0 {
                byte & 0x0f
            } else {
                byte >> 4
            };
            row.push(self.value(code)?);
        }
        Ok(row)
    }

    fn nodes(&mut self) -> Result<Vec<NodeInfo>, DecodeError> {
        // id, address (at least a word), role.
        let count = self.count("node", 3 * WORD)?;
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            let id = self.u64("node id")?;
            let address = self.text("node address")?;
            let role = self.role()?;
            nodes.push(NodeInfo { id, address, role });
        }
        Ok(nodes)
    }

    fn files(&mut self) -> Result<Vec<File>, DecodeError> {
        // name (at least a word) and length.
        let count = self.count("file", 2 * WORD)?;
        let mut files = Vec::with_capacity(count);
        for _ in 0..count {
            let name = self.text("file name")?;
            let data = self.blob("file data")?;
            files.push(File { name, data });
        }
        Ok(files)
    }

    fn db_id(&mut self) -> Result<u32, DecodeError> {
        let value = self.u64("database id")?;
        u32::try_from(value).map_err(|_| DecodeError::OutOfRange {
            what: "database id",
            value,
        })
    }

    fn format(&mut self, what: &'static str, expected: u64) -> Result<(), DecodeError> {
        let format = self.u64(what)?;
        if format != expected {
            return Err(DecodeError::UnsupportedFormat { what, format });
        }
        Ok(())
    }

    /// Every byte of the body must have been read.
    fn finish(&self, kind: u8) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { kind, count }),
        }
    }
}

/// Checks that a body is what its header announced before any field is read.
fn check_body(header: &Header, body: &[u8]) -> Result<(), DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::EmptyBody);
    }
    if header.body_len() != body.len() as u64 {
        return Err(DecodeError::BodyLength {
            words: header.words,
            len: body.len(),
        });
    }
    Ok(())
}

/// Splits a frame (header and body) into its header and exactly its body.
fn split_frame(frame: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    let mut reader = Reader::new(frame);
    let header = Header::decode(reader.array("message header")?);
    let body = reader.take(header.body_len(), "message body")?;
    Ok((header, body))
}

impl Request {
    /// Decodes a request body whose header has been read.
    pub fn decode(header: &Header, body: &[u8]) -> Result<Request, DecodeError> {
        check_body(header, body)?;
        let mut r = Reader::new(body);
        let request = match header.kind {
            rq::LEADER => {
                r.u64("leader request")?;
                Request::Leader
            }
            rq::CLIENT => Request::Client {
                id: r.u64("client id")?,
            },
            rq::OPEN => Request::Open {
                name: r.text("database name")?,
                flags: r.u64("open flags")?,
                vfs: r.text("vfs name")?,
            },
            rq::EXEC_SQL | rq::QUERY_SQL => {
                let db = r.db_id()?;
                let sql = r.text("sql")?;
                let params = r.params(header.revision)?;
                if header.kind == rq::EXEC_SQL {
                    Request::ExecSql { db, sql, params }
                } else {
                    Request::QuerySql { db, sql, params }
                }
            }
            rq::INTERRUPT => Request::Interrupt { db: r.db_id()? },
            rq::ADD => Request::Add {
                id: r.u64("node id")?,
                address: r.text("node address")?,
            },
            rq::ASSIGN => Request::Assign {
                id: r.u64("node id")?,
                role: r.role()?,
            },
            rq::REMOVE => Request::Remove {
                id: r.u64("node id")?,
            },
            rq::DUMP => Request::Dump {
                name: r.text("database name")?,
            },
            rq::CLUSTER => {
                r.format("cluster", CLUSTER_FORMAT)?;
                Request::Cluster
            }
            rq::TRANSFER => Request::Transfer {
                id: r.u64("node id")?,
            },
            rq::DESCRIBE => {
                r.format("describe", DESCRIBE_FORMAT)?;
                Request::Describe
            }
            rq::WEIGHT => Request::Weight {
                weight: r.u64("weight")?,
            },
            kind => return Err(DecodeError::UnknownMessageType { kind }),
        };
        r.finish(header.kind)?;
        Ok(request)
    }

    /// Decodes one request from the start of `frame`; returns it and the bytes it took.
    pub fn decode_frame(frame: &[u8]) -> Result<(Request, usize), DecodeError> {
        let (header, body) = split_frame(frame)?;
        Ok((Request::decode(&header, body)?, HEADER_SIZE + body.len()))
    }
}

impl Response {
    /// Decodes a response body whose header has been read.
    pub fn decode(header: &Header, body: &[u8]) -> Result<Response, DecodeError> {
        check_body(header, body)?;
        let mut r = Reader::new(body);
        let response = match header.kind {
            rs::FAILURE => Response::Failure {
                code: r.u64("failure code")?,
                message: r.text("failure message")?,
            },
            rs::SERVER => Response::Server {
                id: r.u64("node id")?,
                address: r.text("node address")?,
            },
            rs::WELCOME => Response::Welcome {
                heartbeat_timeout: r.u64("heartbeat timeout")?,
            },
            rs::SERVERS => Response::Servers(r.nodes()?),
            rs::DB => {
                let id = r.u32("database id")?;
                r.u32("database padding")?;
                Response::Db { id }
            }
            rs::RESULT => Response::Result {
                last_insert_id: r.u64("last insert id")?,
                rows_affected: r.u64("rows affected")?,
            },
            rs::ROWS => Response::Rows(r.rows()?),
            rs::EMPTY => {
                r.u64("empty response")?;
                Response::Empty
            }
            rs::FILES => Response::Files(r.files()?),
            rs::METADATA => Response::Metadata {
                failure_domain: r.u64("failure domain")?,
                weight: r.u64("weight")?,
            },
            kind => return Err(DecodeError::UnknownMessageType { kind }),
        };
        r.finish(header.kind)?;
        Ok(response)
    }

    /// Decodes one response from the start of `frame`; returns it and the bytes it took.
    pub fn decode_frame(frame: &[u8]) -> Result<(Response, usize), DecodeError> {
        let (header, body) = split_frame(frame)?;
        Ok((Response::decode(&header, body)?, HEADER_SIZE + body.len()))
    }
}
