//! The workspace's layering, checked from `cargo metadata`: every crate depends only on crates in lower layers (so
//! there is no cycle between crates and the arrows in ARCHITECTURE.md only point down), and no domain crate depends
//! on the HTTP stack (only the server, the CLI, the SDK and the load tool speak HTTP). Inside each crate, the modules'
//! `crate::`/`super::` paths must not form a cycle either.

#![allow(clippy::expect_used)] // Test code: a panic is a failed test.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Lowest first. A crate may depend on crates of lower layers only, never on its own layer or above.
const LAYERS: &[&[&str]] = &[
    &[
        "deputy-core",
        "deputy-vector",
        "deputy-python-files",
        "deputy-outbound",
    ],
    &[
        "deputy-tokens",
        "deputy-authz",
        "deputy-store",
        "deputy-models",
    ],
    &["deputy-catalog"],
    &["deputy-sql", "deputy-access"],
    &[
        "deputy-connections",
        "deputy-agents",
        "deputy-warehouse",
        "deputy-oidc",
    ],
    &["deputy-serving", "deputy-signin"],
    &[
        "deputy-vector-search",
        "deputy-genie",
        "deputy-mcp",
        "deputy-console",
    ],
    &["deputy-server", "deputy-sdk"],
    &["deputy", "deputy-load"],
];

/// Crates that speak the wire; everything else is a domain crate and must not see HTTP types.
const WIRE_CRATES: &[&str] = &[
    "deputy-server",
    "deputy-console",
    "deputy",
    "deputy-sdk",
    "deputy-load",
];
const HTTP_STACK: &[&str] = &["axum", "tower", "tower-http", "http", "hyper", "http-body"];

struct Package {
    name: String,
    /// Normal and build dependencies (dev-dependencies do not take part in the library graph).
    dependencies: Vec<String>,
}

fn workspace_packages() -> Vec<Package> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata is JSON");
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|package| Package {
            name: package["name"].as_str().expect("name").to_owned(),
            dependencies: package["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|dependency| dependency["kind"].as_str() != Some("dev"))
                .map(|dependency| dependency["name"].as_str().expect("name").to_owned())
                .collect(),
        })
        .collect()
}

fn layer_of() -> HashMap<&'static str, usize> {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(layer, names)| names.iter().map(move |name| (*name, layer)))
        .collect()
}

#[test]
fn every_workspace_crate_has_a_layer_and_depends_only_downwards() {
    let layers = layer_of();
    let mut violations = Vec::new();
    for package in workspace_packages() {
        let Some(&own) = layers.get(package.name.as_str()) else {
            violations.push(format!("{} has no layer in this test", package.name));
            continue;
        };
        for dependency in &package.dependencies {
            if let Some(&theirs) = layers.get(dependency.as_str())
                && theirs >= own
            {
                violations.push(format!(
                    "{} (layer {own}) depends on {dependency} (layer {theirs})",
                    package.name
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn no_domain_crate_depends_on_the_http_stack() {
    let violations: Vec<String> = workspace_packages()
        .into_iter()
        .filter(|package| !WIRE_CRATES.contains(&package.name.as_str()))
        .flat_map(|package| {
            package
                .dependencies
                .iter()
                .filter(|dependency| HTTP_STACK.contains(&dependency.as_str()))
                .map(|dependency| format!("{} depends on {dependency}", package.name))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// A module's path inside its crate (`routes::serving`), from its file's path under `src/`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("lib" | "main" | "mod")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// The `a::b` paths that follow each `prefix` in `text`.
fn paths_after<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = Vec<&'a str>> + 'a {
    text.match_indices(prefix).map(move |(at, _)| {
        let rest = &text[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        rest[..end]
            .split("::")
            .filter(|part| !part.is_empty())
            .collect()
    })
}

/// Which modules of a crate use which (through `crate::` and `super::` paths), test modules left out.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .into_iter()
        .map(|file| (module_of(src, &file), file))
        .collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("readable source");
        // Unit tests sit at the end of their file, after `#[cfg(test)]`; they may use anything.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let parent = module.rsplit_once("::").map_or("", |(parent, _)| parent);
        let mut uses = BTreeSet::new();
        let mut add = |path: Vec<&str>| {
            let found = (1..=path.len())
                .rev()
                .map(|length| path[..length].join("::"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(used) = found.filter(|used| used != module && !used.is_empty()) {
                uses.insert(used);
            }
        };
        for path in paths_after(code, "crate::") {
            add(path);
        }
        for path in paths_after(code, "super::") {
            let mut absolute: Vec<&str> = parent.split("::").filter(|p| !p.is_empty()).collect();
            absolute.extend(path);
            add(absolute);
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == node) {
            return Some(path[start..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_itself_through_a_cycle_inside_any_crate() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The graph is read at all: the server's authentication layer uses its state.
    let server = module_graph(&crates.join("deputy-server").join("src"));
    assert!(server["middleware"].contains("state"), "{server:?}");
    let mut cycles = Vec::new();
    for entry in std::fs::read_dir(&crates).expect("crates directory") {
        let src = entry.expect("crate").path().join("src");
        if src.is_dir()
            && let Some(cycle) = find_cycle(&module_graph(&src))
        {
            cycles.push(format!("{}: {}", src.display(), cycle.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "{}", cycles.join("\n"));
}

#[test]
fn a_module_cycle_would_be_reported() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("state", &["routes"][..]),
        ("routes", &["state"][..]),
        ("error", &[][..]),
    ]
    .into_iter()
    .map(|(module, uses)| {
        let uses = uses.iter().map(|used| used.to_string()).collect();
        (module.to_owned(), uses)
    })
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["routes".to_owned(), "state".to_owned()])
    );
}

/// The test itself must be able to fail: an upward edge is reported.
#[test]
fn an_upward_dependency_would_be_reported() {
    let layers = layer_of();
    assert!(layers["deputy-access"] > layers["deputy-store"]);
    assert!(layers["deputy-access"] < layers["deputy-server"]);
    assert!(layers["deputy-connections"] > layers["deputy-access"]);
}
