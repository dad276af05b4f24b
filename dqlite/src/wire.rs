//! Encode and decode Dqlite wire-protocol version 1 messages. No IO.
