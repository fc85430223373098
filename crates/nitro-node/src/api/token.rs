//! The API's bearer token: a file of the node's, created on first start with mode 0600
//! (parent directories 0700) and refused when group or others may read or change it.

use std::io;
use std::path::Path;

use super::error::ApiError;

/// Shortest token accepted in a token file.
const MIN_TOKEN_LEN: usize = 32;

/// Longest token accepted in a token file.
const MAX_TOKEN_LEN: usize = 512;

/// Reads the bearer token from `path`, or creates the file with a new token (32 random bytes
/// as 64 hex digits, file mode 0600, parent directories 0700) if it does not exist.
///
/// An existing file must hold one token of 32 to 512 visible ASCII characters (surrounding
/// whitespace is ignored) and, on Unix, must not be readable or writable by group or others.
/// Creation is atomic: the file appears with its full content or not at all.
pub fn load_or_create_token(path: &Path) -> Result<String, ApiError> {
    match read_token(path) {
        Err(ApiError::TokenFile { source, .. }) if source.kind() == io::ErrorKind::NotFound => create_token(path),
        other => other,
    }
}

fn read_token(path: &Path) -> Result<String, ApiError> {
    let io_error = |source| ApiError::TokenFile { path: path.to_owned(), source };
    let bad = |reason: String| ApiError::BadTokenFile { path: path.to_owned(), reason };
    let metadata = std::fs::metadata(path).map_err(io_error)?;
    if !metadata.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if metadata.len() > 4096 {
        return Err(bad(format!("too large ({} bytes) for a token", metadata.len())));
    }
    check_private(&metadata).map_err(bad)?;
    let text = std::fs::read_to_string(path).map_err(io_error)?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN || token.len() > MAX_TOKEN_LEN {
        return Err(bad(format!(
            "the token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters long, found {}",
            token.len()
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("the token must be visible ASCII characters without spaces".into()));
    }
    Ok(token.to_owned())
}

#[cfg(unix)]
fn check_private(metadata: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!("mode {mode:o} lets other users read or change the token; run chmod 600 on it"));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &std::fs::Metadata) -> Result<(), String> {
    Ok(())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::Random(e.to_string()))?;
    Ok(bytes)
}

fn create_token(path: &Path) -> Result<String, ApiError> {
    let io_error = |source| ApiError::TokenFile { path: path.to_owned(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(io_error)?;
    }
    let token = alloy_primitives::hex::encode(random_bytes::<32>()?);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "token".into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", alloy_primitives::hex::encode(random_bytes::<8>()?)));
    let written = write_private(&tmp, format!("{token}\n").as_bytes());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(e));
    }
    // A hard link publishes the complete file, and fails if another process created the
    // token first: then that token wins.
    let linked = std::fs::hard_link(&tmp, path);
    let result = match linked {
        Ok(()) => Ok(token),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_token(path),
        Err(_) => std::fs::rename(&tmp, path).map(|()| token.clone()).map_err(io_error),
    };
    let _ = std::fs::remove_file(&tmp);
    if result.is_ok() {
        tracing::info!(path = %path.display(), "created the API token file");
    }
    result
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

fn write_private(path: &Path, content: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content)?;
    file.sync_all()
}
