//! Reading and writing the pipeline's files as untrusted input: a path that is not a regular
//! file (a FIFO, a device, a directory) is refused before it is opened, a file larger than
//! its format allows is refused before it is read, and secrets are written owner-only.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

/// Reads `path`, a `what` of at most `max_bytes`, after checking that it is a regular file no
/// larger than that.
pub fn read_checked(path: &Path, max_bytes: u64, what: &str) -> Result<Vec<u8>, String> {
    let file = open_checked(path, max_bytes, what)?;
    let mut bytes = Vec::new();
    read_bounded(file, path, max_bytes, what, &mut bytes)?;
    Ok(bytes)
}

/// Reads the opened file into `bytes`, bounded even if it grew after the size check.
fn read_bounded(
    file: File,
    path: &Path,
    max_bytes: u64,
    what: &str,
    bytes: &mut Vec<u8>,
) -> Result<(), String> {
    file.take(max_bytes + 1)
        .read_to_end(bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(path, bytes.len() as u64, max_bytes, what));
    }
    Ok(())
}

/// [`read_checked`] for a secret: the bytes are zeroized when dropped, and a file that other
/// users can read is reported (it is still read: refusing would not take the secret back).
pub fn read_secret(path: &Path, max_bytes: u64, what: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let file = open_checked(path, max_bytes, what)?;
    let mode = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        eprintln!(
            "warning: {} ({what}) can be read by other users (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    // Room for the whole secret up front: a buffer that grew would leave copies behind.
    let mut bytes = Zeroizing::new(Vec::with_capacity(max_bytes.min(1 << 20) as usize + 1));
    read_bounded(file, path, max_bytes, what, &mut bytes)?;
    Ok(bytes)
}

fn too_large(path: &Path, len: u64, max_bytes: u64, what: &str) -> String {
    format!(
        "{} is {len} bytes, more than a {what} can be ({max_bytes} bytes at most)",
        path.display()
    )
}

fn open_checked(path: &Path, max_bytes: u64, what: &str) -> Result<File, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "{} is not a regular file (a {what} is read from a file, not a FIFO, device or directory)",
            path.display()
        ));
    }
    if meta.len() > max_bytes {
        return Err(too_large(path, meta.len(), max_bytes, what));
    }
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // The path may have been replaced between the two checks: check what was opened.
    let opened = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !opened.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    Ok(file)
}

/// Writes `bytes` to `path`.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes a secret to `path`, readable and writable by its owner only (0600), also when the
/// file existed with a wider mode.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cryptonets-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn secrets_are_owner_only_even_over_a_readable_file() {
        let path = temp("secret");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_secret(&path, b"new").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(&**read_secret(&path, 10, "secret key").unwrap(), b"new");
    }

    #[test]
    fn oversized_files_and_directories_are_refused_before_reading() {
        let path = temp("big");
        std::fs::write(&path, [0u8; 100]).unwrap();
        let err = read_checked(&path, 99, "model").unwrap_err();
        assert!(err.contains("more than a model can be"), "{err}");
        assert_eq!(read_checked(&path, 100, "model").unwrap().len(), 100);
        let err = read_checked(path.parent().unwrap(), 1 << 20, "model").unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let path = temp("fifo");
        let _ = std::fs::remove_file(&path);
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        // Opening a FIFO for reading would block until a writer comes: it must not be opened.
        let err = read_checked(&path, 1 << 20, "batch").unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
