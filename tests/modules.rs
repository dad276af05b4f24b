//! The charm's module structure, read from its sources: the pure modules (the decisions)
//! import nothing that does IO and do no IO themselves, and no two modules import each other
//! through any chain. `observe -> plan -> apply` stays a one-way street.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that decide without touching the world: they take what was observed and return
/// what to do. Table-tested without processes, files or sockets.
const PURE: &[&str] = &["address", "config", "event", "plan", "status"];

/// Text that means IO in a pure module's non-test code.
const IO_MARKERS: &[&str] = &[
    "std::fs",
    "std::process",
    "std::net::TcpStream",
    "UnixStream",
    "duct::",
    "std::env::var",
    "File::",
];

/// Every source file of the charm's library, keyed by its top-level module (`actions` for
/// `src/actions/*.rs`), with the code before its `#[cfg(test)]` module.
fn sources() -> BTreeMap<String, Vec<(PathBuf, String)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules: BTreeMap<String, Vec<(PathBuf, String)>> = BTreeMap::new();
    let mut files = vec![];
    for entry in std::fs::read_dir(&src).expect("src/ lists") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).expect("a module dir lists") {
                files.push(inner.expect("an entry").path());
            }
        } else {
            files.push(path);
        }
    }
    for path in files {
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let relative = path.strip_prefix(&src).expect("under src/");
        let module = match relative.components().next() {
            Some(first) => first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned(),
            None => continue,
        };
        if module == "main" || module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a source file reads");
        let code = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .to_owned();
        modules.entry(module).or_default().push((path, code));
    }
    modules
}

/// The crate modules `code` refers to (`crate::name` anywhere: `use` lines and paths).
fn crate_refs(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .map(|(at, _)| {
            code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    sources()
        .into_iter()
        .map(|(module, files)| {
            let mut refs: BTreeSet<String> = files
                .iter()
                .flat_map(|(_, code)| crate_refs(code))
                .collect();
            refs.remove(&module);
            (module, refs)
        })
        .collect()
}

#[test]
fn the_reader_sees_the_modules() {
    let graph = graph();
    // The check below would pass vacuously on an empty or misread tree.
    for module in PURE.iter().chain(&["hook", "actions", "tools", "conffile"]) {
        assert!(graph.contains_key(*module), "{module} not found: {graph:?}");
    }
    assert!(graph["hook"].contains("plan"), "{:?}", graph["hook"]);
    assert!(
        crate_refs("use crate::plan::{self, X};\nlet a = crate::status::Level::Info;")
            == BTreeSet::from(["plan".to_owned(), "status".to_owned()])
    );
}

#[test]
fn pure_modules_import_only_pure_modules_and_do_no_io() {
    let sources = sources();
    let graph = graph();
    for module in PURE {
        let impure: Vec<&String> = graph[*module]
            .iter()
            .filter(|name| !PURE.contains(&name.as_str()))
            .collect();
        assert!(
            impure.is_empty(),
            "pure module {module} imports {impure:?}, which do IO"
        );
        for (path, code) in &sources[*module] {
            for marker in IO_MARKERS {
                assert!(
                    !code.contains(marker),
                    "{} uses {marker} outside its tests",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let graph = graph();
    // Depth-first search for a cycle, reporting its path.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let cycle = visit(module, &graph, &mut vec![], &mut done);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap_or_default().join(" -> ")
        );
    }
}
