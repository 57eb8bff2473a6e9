//! The Python files the `deputy` binary ships: the agent runtime its workers run, and the demo's example agent.
//!
//! They are embedded at build time, so a binary copied away from the source tree it was built from (an installed
//! binary, a container image) still hosts Python agents, and written out on demand under the data directory.
//!
//! **Invariant:** a written tree is complete or absent. It is written into a temporary sibling and renamed into
//! place, and its directory's name carries a hash of its contents, so a binary only ever runs the files it was built
//! with, and two binaries of different builds sharing one data directory never overwrite each other's files.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A set of Python files with their paths relative to the tree's root.
pub struct PythonTree {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
}

/// Embeds the named files of `python/$tree/` in the source tree, each with its relative path.
macro_rules! embed {
    ($tree:literal, [$($path:literal),* $(,)?]) => {
        &[$(($path, include_str!(concat!("../../../python/", $tree, "/", $path)))),*]
    };
}

/// The worker's runtime (`python -m deputy_agent_runtime`) and the `mlflowserving` shim the Databricks SDK imports.
pub const AGENT_RUNTIME: PythonTree = PythonTree {
    name: "deputy-agent-runtime",
    files: embed!(
        "deputy-agent-runtime",
        [
            "deputy_agent_runtime/__init__.py",
            "deputy_agent_runtime/__main__.py",
            "deputy_agent_runtime/handlers.py",
            "deputy_agent_runtime/loader.py",
            "deputy_agent_runtime/tokens.py",
            "deputy_agent_runtime/worker.py",
            "mlflowserving/__init__.py",
            "mlflowserving/scoring_server/__init__.py",
            "mlflowserving/scoring_server/agent_utils.py",
        ]
    ),
};

/// The seed's RAG agent (`agent.py`) and the script that logs it as an MLflow model (`log_agent.py`).
pub const RAG_EXAMPLE: PythonTree = PythonTree {
    name: "rag_agent",
    files: embed!("examples/rag_agent", ["agent.py", "log_agent.py"]),
};

impl PythonTree {
    /// The tree's files: relative path and contents.
    pub fn files(&self) -> &'static [(&'static str, &'static str)] {
        self.files
    }

    /// A short hash over every path and content, naming this build's version of the tree.
    pub fn version(&self) -> String {
        let mut hasher = Sha256::new();
        for (path, contents) in self.files {
            // Lengths first, so that no two different trees hash the same byte stream.
            hasher.update((path.len() as u64).to_le_bytes());
            hasher.update(path.as_bytes());
            hasher.update((contents.len() as u64).to_le_bytes());
            hasher.update(contents.as_bytes());
        }
        hex::encode(&hasher.finalize()[..8])
    }

    /// Writes the tree to `parent/NAME-VERSION` unless it is there already, and returns that directory.
    pub fn write_under(&self, parent: &Path) -> io::Result<PathBuf> {
        let target = parent.join(format!("{}-{}", self.name, self.version()));
        if target.is_dir() {
            return Ok(target);
        }
        std::fs::create_dir_all(parent)?;
        let staging = parent.join(format!(
            ".{}-{}.partial",
            self.name,
            uuid::Uuid::new_v4().simple()
        ));
        let written = self
            .write_files(&staging)
            .and_then(|()| std::fs::rename(&staging, &target));
        match written {
            Ok(()) => Ok(target),
            // Another process (a second server on the same directory) renamed its copy first: the same files.
            Err(_) if target.is_dir() => {
                std::fs::remove_dir_all(&staging)?;
                Ok(target)
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(error)
            }
        }
    }

    fn write_files(&self, root: &Path) -> io::Result<()> {
        for (path, contents) in self.files {
            let file = root.join(path);
            if let Some(directory) = file.parent() {
                std::fs::create_dir_all(directory)?;
            }
            std::fs::write(file, contents)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The `.py` files below `directory`, as paths relative to `root`.
    fn python_files_on_disk(root: &Path, directory: &Path) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for entry in std::fs::read_dir(directory).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(python_files_on_disk(root, &path));
            } else if path.extension().is_some_and(|extension| extension == "py") {
                let relative = path.strip_prefix(root).unwrap();
                found.insert(relative.to_string_lossy().into_owned());
            }
        }
        found
    }

    fn embedded_paths(tree: &PythonTree) -> BTreeSet<String> {
        tree.files()
            .iter()
            .map(|(path, _)| (*path).to_owned())
            .collect()
    }

    #[test]
    fn the_runtime_embeds_every_python_file_of_its_packages() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../python/deputy-agent-runtime");
        let mut on_disk = python_files_on_disk(&root, &root.join("deputy_agent_runtime"));
        on_disk.extend(python_files_on_disk(&root, &root.join("mlflowserving")));
        assert_eq!(embedded_paths(&AGENT_RUNTIME), on_disk);
    }

    #[test]
    fn the_example_embeds_every_python_file_of_its_directory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../python/examples/rag_agent");
        let on_disk = python_files_on_disk(&root, &root);
        assert_eq!(embedded_paths(&RAG_EXAMPLE), on_disk);
    }

    #[test]
    fn writing_twice_reuses_the_complete_versioned_directory() {
        let parent = tempfile::tempdir().unwrap();
        let first = AGENT_RUNTIME.write_under(parent.path()).unwrap();
        assert!(first.ends_with(format!("deputy-agent-runtime-{}", AGENT_RUNTIME.version())));
        for (path, contents) in AGENT_RUNTIME.files() {
            assert_eq!(
                std::fs::read_to_string(first.join(path)).unwrap(),
                *contents
            );
        }
        let second = AGENT_RUNTIME.write_under(parent.path()).unwrap();
        assert_eq!(first, second);
        let entries: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "no staging directory is left behind");
    }

    #[test]
    fn different_contents_get_different_versions() {
        let changed = PythonTree {
            name: "rag_agent",
            files: &[("agent.py", "print('other')\n")],
        };
        assert_ne!(changed.version(), RAG_EXAMPLE.version());
        let renamed = PythonTree {
            name: "rag_agent",
            files: &[("other.py", "print('other')\n")],
        };
        assert_ne!(changed.version(), renamed.version());
    }
}
