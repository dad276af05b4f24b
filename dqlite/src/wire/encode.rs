//! Encoding of requests and responses into protocol-version-1 bytes.

use super::{
    request_type as rq, response_type as rs, EncodeError, File, Request, Response, RowsBatch,
    Value, CLUSTER_FORMAT, DESCRIBE_FORMAT, HEADER_SIZE, WORD,
};

/// The first word of a row batch's end: all `0xff` means the query is done.
pub(super) const DONE_MARKER: u64 = u64::MAX;
/// All `0xee`: another ROWS message follows.
pub(super) const MORE_MARKER: u64 = 0xeeee_eeee_eeee_eeee;

/// Appends one message to a buffer: a header placeholder first, patched once the body is known.
struct Writer<'a> {
    buf: &'a mut Vec<u8>,
    /// Where this message's header starts in `buf` (the buffer may hold earlier messages).
    start: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut Vec<u8>) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&[0; HEADER_SIZE]);
        Writer { buf, start }
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Zero bytes up to the next word boundary of the body.
    fn pad(&mut self) {
        let used = (self.buf.len() - self.start) % WORD;
        if used != 0 {
            self.buf.resize(self.buf.len() + WORD - used, 0);
        }
    }

    fn text(&mut self, v: &str) -> Result<(), EncodeError> {
        if v.as_bytes().contains(&0) {
            return Err(EncodeError::NulInText);
        }
        self.buf.extend_from_slice(v.as_bytes());
        self.buf.push(0);
        self.pad();
        Ok(())
    }

    fn blob(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
        self.pad();
    }

    fn value(&mut self, v: &Value) -> Result<(), EncodeError> {
        match v {
            Value::Integer(v) | Value::UnixTime(v) => self.i64(*v),
            Value::Float(v) => self.u64(v.to_bits()),
            Value::Text(v) | Value::Iso8601(v) => self.text(v)?,
            Value::Blob(v) => self.blob(v),
            Value::Null => self.u64(0),
            Value::Boolean(v) => self.u64(u64::from(*v)),
        }
        Ok(())
    }

    /// A parameter tuple: count, one type byte each, padding, then the values. Revision 0
    /// carries the count in one byte, revision 1 in four.
    fn params(&mut self, params: &[Value], revision: u8) -> Result<(), EncodeError> {
        if params.is_empty() {
            return Ok(());
        }
        if revision == 0 {
            self.u8(params.len() as u8);
        } else {
            let count = u32::try_from(params.len()).map_err(|_| EncodeError::TooManyParams {
                count: params.len(),
            })?;
            self.u32(count);
        }
        for param in params {
            self.u8(param.type_code());
        }
        self.pad();
        for param in params {
            self.value(param)?;
        }
        Ok(())
    }

    /// Row values after a header of 4-bit type codes, low nibble first.
    fn rows(&mut self, batch: &RowsBatch) -> Result<(), EncodeError> {
        self.u64(batch.columns.len() as u64);
        for column in &batch.columns {
            self.text(column)?;
        }
        if batch.columns.is_empty() && !batch.rows.is_empty() {
            // A row of no columns would encode to no bytes at all and vanish on the way.
            return Err(EncodeError::RowsWithoutColumns);
        }
        for row in &batch.rows {
            if row.len() != batch.columns.len() {
                return Err(EncodeError::RowWidth {
                    columns: batch.columns.len(),
                    values: row.len(),
                });
            }
            for pair in row.chunks(2) {
                let low = pair[0].type_code();
                let high = pair.get(1).map_or(0, Value::type_code);
                self.u8(low | (high << 4));
            }
            self.pad();
            for value in row {
                self.value(value)?;
            }
        }
        self.u64(if batch.more { MORE_MARKER } else { DONE_MARKER });
        Ok(())
    }

    /// Patches the header with the body's length in words and the type.
    fn finish(self, kind: u8, revision: u8) -> Result<(), EncodeError> {
        let body = self.buf.len() - self.start - HEADER_SIZE;
        debug_assert!(
            body > 0 && body.is_multiple_of(WORD),
            "every message has a word-aligned body"
        );
        let words =
            u32::try_from(body / WORD).map_err(|_| EncodeError::BodyTooLarge { bytes: body })?;
        let header = &mut self.buf[self.start..self.start + HEADER_SIZE];
        header[0..4].copy_from_slice(&words.to_le_bytes());
        header[4] = kind;
        header[5] = revision;
        Ok(())
    }
}

impl Request {
    /// The request's type code.
    pub fn type_code(&self) -> u8 {
        match self {
            Request::Leader => rq::LEADER,
            Request::Client { .. } => rq::CLIENT,
            Request::Open { .. } => rq::OPEN,
            Request::ExecSql { .. } => rq::EXEC_SQL,
            Request::QuerySql { .. } => rq::QUERY_SQL,
            Request::Interrupt { .. } => rq::INTERRUPT,
            Request::Add { .. } => rq::ADD,
            Request::Assign { .. } => rq::ASSIGN,
            Request::Remove { .. } => rq::REMOVE,
            Request::Dump { .. } => rq::DUMP,
            Request::Cluster => rq::CLUSTER,
            Request::Transfer { .. } => rq::TRANSFER,
            Request::Describe => rq::DESCRIBE,
            Request::Weight { .. } => rq::WEIGHT,
        }
    }

    /// Appends the request (header and body) to `buf`. On error `buf` may hold a partial
    /// message: truncate it to its old length before reusing it.
    pub fn encode(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut w = Writer::new(buf);
        let mut revision = 0;
        match self {
            Request::Leader => w.u64(0),
            Request::Client { id } => w.u64(*id),
            Request::Open { name, flags, vfs } => {
                w.text(name)?;
                w.u64(*flags);
                w.text(vfs)?;
            }
            Request::ExecSql { db, sql, params } | Request::QuerySql { db, sql, params } => {
                // Revision 1 widens the parameter count to 32 bits; use it only when needed so
                // that older servers understand every ordinary request.
                revision = u8::from(params.len() > usize::from(u8::MAX));
                w.u64(u64::from(*db));
                w.text(sql)?;
                w.params(params, revision)?;
            }
            Request::Interrupt { db } => w.u64(u64::from(*db)),
            Request::Add { id, address } => {
                w.u64(*id);
                w.text(address)?;
            }
            Request::Assign { id, role } => {
                w.u64(*id);
                w.u64(role.code());
            }
            Request::Remove { id } | Request::Transfer { id } => w.u64(*id),
            Request::Dump { name } => w.text(name)?,
            Request::Cluster => w.u64(CLUSTER_FORMAT),
            Request::Describe => w.u64(DESCRIBE_FORMAT),
            Request::Weight { weight } => w.u64(*weight),
        }
        w.finish(self.type_code(), revision)
    }
}

impl Response {
    /// The response's type code.
    pub fn type_code(&self) -> u8 {
        match self {
            Response::Failure { .. } => rs::FAILURE,
            Response::Server { .. } => rs::SERVER,
            Response::Welcome { .. } => rs::WELCOME,
            Response::Servers(_) => rs::SERVERS,
            Response::Db { .. } => rs::DB,
            Response::Result { .. } => rs::RESULT,
            Response::Rows(_) => rs::ROWS,
            Response::Empty => rs::EMPTY,
            Response::Files(_) => rs::FILES,
            Response::Metadata { .. } => rs::METADATA,
        }
    }

    /// Appends the response (header and body) to `buf`: what a node sends, used by test
    /// servers. On error `buf` may hold a partial message.
    pub fn encode(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut w = Writer::new(buf);
        match self {
            Response::Failure { code, message } => {
                w.u64(*code);
                w.text(message)?;
            }
            Response::Server { id, address } => {
                w.u64(*id);
                w.text(address)?;
            }
            Response::Welcome { heartbeat_timeout } => w.u64(*heartbeat_timeout),
            Response::Servers(nodes) => {
                w.u64(nodes.len() as u64);
                for node in nodes {
                    w.u64(node.id);
                    w.text(&node.address)?;
                    w.u64(node.role.code());
                }
            }
            Response::Db { id } => {
                w.u32(*id);
                w.u32(0);
            }
            Response::Result {
                last_insert_id,
                rows_affected,
            } => {
                w.u64(*last_insert_id);
                w.u64(*rows_affected);
            }
            Response::Rows(batch) => w.rows(batch)?,
            Response::Empty => w.u64(0),
            Response::Files(files) => {
                w.u64(files.len() as u64);
                for File { name, data } in files {
                    w.text(name)?;
                    w.blob(data);
                }
            }
            Response::Metadata {
                failure_domain,
                weight,
            } => {
                w.u64(*failure_domain);
                w.u64(*weight);
            }
        }
        w.finish(self.type_code(), 0)
    }
}
