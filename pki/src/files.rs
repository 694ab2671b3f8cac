//! Small file helpers for key material: private directories (0700) and files created
//! with their final mode from the start (0600 for keys), never chmod-ed afterwards.

use std::fs::{self, OpenOptions};
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::error::PkiError;

/// Mode of files holding private keys.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of files holding public material (certificates, public keys).
pub(crate) const PUBLIC_FILE_MODE: u32 = 0o644;

/// Creates `dir` (and parents) with mode 0700 when missing; an existing directory is
/// left as it is.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).map_err(|e| PkiError::io(dir, e))
}

/// Writes a new file that must not exist yet, created with `mode`.
pub(crate) fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| PkiError::io(path, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| PkiError::io(path, e))
}

pub(crate) fn read_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|e| PkiError::io(path, e))
}

/// Which of a pair of files (e.g. certificate and key) exist.
pub(crate) fn pair_state(a: &Path, b: &Path) -> Result<bool, PkiError> {
    match (a.exists(), b.exists()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => Err(PkiError::io(
            b,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} exists but this file is missing", a.display()),
            ),
        )),
        (false, true) => Err(PkiError::io(
            a,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} exists but this file is missing", b.display()),
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_file_has_mode_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        ensure_private_dir(&sub).unwrap();
        let path = sub.join("k");
        write_new_file(&path, b"secret", PRIVATE_FILE_MODE).unwrap();
        assert_eq!(read_string(&path).unwrap(), "secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let dir_mode = fs::metadata(&sub).unwrap().permissions().mode() & 0o777;
            assert_eq!(dir_mode, 0o700);
        }
        assert!(matches!(
            write_new_file(&path, b"other", PRIVATE_FILE_MODE),
            Err(PkiError::Io { .. })
        ));
    }

    #[test]
    fn half_a_pair_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        assert!(!pair_state(&a, &b).unwrap());
        write_new_file(&a, b"x", PUBLIC_FILE_MODE).unwrap();
        assert!(pair_state(&a, &b).is_err());
        write_new_file(&b, b"x", PUBLIC_FILE_MODE).unwrap();
        assert!(pair_state(&a, &b).unwrap());
    }
}
