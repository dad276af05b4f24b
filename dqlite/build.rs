//! Links libdqlite through pkg-config, so that the flags packagers publish (Debian's
//! `libdqlite-dev`, a source build's prefix) are the ones used.

fn main() {
    if let Err(error) = pkg_config::Config::new()
        .atleast_version("1.10")
        .probe("dqlite")
    {
        // Without the library nothing links: say what to install instead of a linker wall.
        panic!("libdqlite not found through pkg-config (install libdqlite-dev): {error}");
    }
}
