//! An async (tokio) client for the Dqlite wire protocol.
