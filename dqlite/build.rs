//! Links libdqlite through pkg-config, so that the flags packagers publish (Debian's
//! `libdqlite-dev`, a source build's prefix) are the ones used.
//!
//! `DQLITE_STATIC=1` links libdqlite and its C dependencies (libraft, libuv, liblz4,
//! libsqlite3) statically instead, from the `.a` files of Debian's -dev packages (or
//! `DQLITE_STATIC_LIBDIR`), so that a packaged binary needs only glibc on the target: the
//! charm's `scripts/build-charm.sh` sets it.

fn main() {
    println!("cargo:rerun-if-env-changed=DQLITE_STATIC");
    println!("cargo:rerun-if-env-changed=DQLITE_STATIC_LIBDIR");
    if std::env::var("DQLITE_STATIC").is_ok_and(|v| v == "1") {
        let libdir = std::env::var("DQLITE_STATIC_LIBDIR")
            .unwrap_or_else(|_| "/usr/lib/x86_64-linux-gnu".to_owned());
        println!("cargo:rustc-link-search=native={libdir}");
        // Dependents after what they depend on is not enough for static archives: each
        // archive must come before the archives it uses.
        for lib in ["dqlite", "raft", "sqlite3", "uv_a", "lz4"] {
            println!("cargo:rustc-link-lib=static:+verbatim=lib{lib}.a");
        }
        for lib in ["pthread", "dl", "rt", "m"] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
        return;
    }
    if let Err(error) = pkg_config::Config::new()
        .atleast_version("1.10")
        .probe("dqlite")
    {
        // Without the library nothing links: say what to install instead of a linker wall.
        panic!("libdqlite not found through pkg-config (install libdqlite-dev): {error}");
    }
}
