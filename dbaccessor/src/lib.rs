//! The dbaccessor daemon library (placeholder).
