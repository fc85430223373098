//! Finding files installed by `npm ci` at the repository root.

use std::path::{Path, PathBuf};

/// The directories searched from: the current directory, the runtime `CARGO_MANIFEST_DIR`
/// (set by `cargo run`/`cargo test`), and this crate's own directory at build time.
pub(crate) fn search_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(dir) = std::env::current_dir() {
        roots.push(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        roots.push(PathBuf::from(dir));
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    roots.dedup();
    roots
}

/// The first `ancestor/relative` that exists, walking up from each search root; `Err` lists
/// the roots searched.
pub(crate) fn find_up(relative: &Path) -> Result<PathBuf, Vec<PathBuf>> {
    let roots = search_roots();
    for root in &roots {
        for dir in root.ancestors() {
            let candidate = dir.join(relative);
            if candidate.exists() {
                return Ok(candidate);
            }
        }
    }
    Err(roots)
}
