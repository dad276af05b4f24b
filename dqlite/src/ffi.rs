//! Raw `extern "C"` declarations of libdqlite 1.11: the only unsafe code in the workspace.
