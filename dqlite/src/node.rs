//! A safe owner of one libdqlite node, its persisted identity and its locked data dir.
