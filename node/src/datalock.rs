//! One running node per data folder.
//!
//! Two nodes on one folder would share a key (one identity, two places),
//! overwrite each other's caches and download list, and the first to stop
//! would remove the files that say where the other's metrics and app are
//! (issue 20: `canopy status` then found no running node, and the
//! supernode dropped the other's files). `canopy run` holds an exclusive
//! lock on `DATA_DIR/run.lock` (an advisory file lock, released by the
//! kernel whatever way the process ends) and writes its process id in it,
//! so a second start can say who holds the folder. One-shot commands (`get`,
//! `search`) take no lock: they may run beside the node.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

const LOCK_FILE: &str = "run.lock";

/// The data folder, held until dropped.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum DataLockError {
    #[error(
        "another canopy run{} is using {}; stop it first, or give this node a folder of its own with --data-dir DIR",
        .holder.map(|pid| format!(" (process {pid})")).unwrap_or_default(),
        .folder.display()
    )]
    Held { folder: PathBuf, holder: Option<u32> },
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Takes `data_dir` for this process, or says who has it.
pub fn lock(data_dir: &Path) -> Result<DataLock, DataLockError> {
    let path = data_dir.join(LOCK_FILE);
    let io = |source| DataLockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(DataLockError::Held {
                folder: data_dir.to_path_buf(),
                holder: text.trim().parse().ok(),
            });
        }
        Err(TryLockError::Error(error)) => return Err(io(error)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(DataLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_has_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let error = lock(dir.path()).unwrap_err();
        let DataLockError::Held { holder, .. } = &error else {
            panic!("{error}")
        };
        assert_eq!(*holder, Some(std::process::id()));
        assert!(error.to_string().contains("--data-dir"), "{error}");
        drop(first);
        lock(dir.path()).expect("free again once the first lets go");
    }
}
