//! The list of shared folders, changeable while the node runs.
//!
//! Folders come from two places: the settings (`--share`, `CANOPY_SHARE`,
//! `share = [...]` in the config file) and the desktop app, where a user
//! adds and removes folders. The app's choices are kept in the data folder
//! as `shared-folders.json`, as two lists: folders **added** and folders
//! **removed**. The folders shared are then
//! `(settings ∪ added) − removed`, so a folder removed in the app stays
//! removed after a restart even if the settings still name it, and adding
//! it again undoes that.

use canopy_common::sync::ReadWrite;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::fileio::write_atomically;

/// File name of the app's choices inside the data folder.
pub const FOLDERS_FILE: &str = "shared-folders.json";
/// Folders shared at most (a cap on what a request can make us scan).
pub const MAX_FOLDERS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{0} is not a folder")]
    NotAFolder(PathBuf),
    #[error("{0} must be an absolute path")]
    NotAbsolute(PathBuf),
    #[error("{0} is not shared")]
    NotShared(PathBuf),
    #[error("{0} is already shared")]
    AlreadyShared(PathBuf),
    #[error("at most {MAX_FOLDERS} folders can be shared")]
    TooMany,
    #[error("cannot save the shared folders in {path}: {source}")]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the app chose, as saved.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Choices {
    added: Vec<PathBuf>,
    removed: Vec<PathBuf>,
}

/// The shared folders; each change bumps the version [`Folders::subscribe`] gives.
#[derive(Debug)]
pub struct Folders {
    /// From the settings, fixed for this run.
    configured: Vec<PathBuf>,
    choices: RwLock<Choices>,
    /// Where the choices are saved (`None`: not saved).
    file: Option<PathBuf>,
    version: watch::Sender<u64>,
}

impl Folders {
    /// The folders of `configured`, with the app's choices saved in
    /// `data_dir` applied. An unreadable choices file is reported and ignored.
    pub fn load(configured: Vec<PathBuf>, data_dir: &Path) -> Folders {
        let file = data_dir.join(FOLDERS_FILE);
        let choices = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(file = %file.display(), %error, "ignoring the damaged list of shared folders");
                Choices::default()
            }),
            Err(_) => Choices::default(),
        };
        Folders {
            configured,
            choices: RwLock::new(choices),
            file: Some(file),
            version: watch::channel(0).0,
        }
    }

    /// Exactly `configured`, nothing saved.
    pub fn fixed(configured: Vec<PathBuf>) -> Folders {
        Folders {
            configured,
            choices: RwLock::default(),
            file: None,
            version: watch::channel(0).0,
        }
    }

    /// The folders shared now, in a stable order.
    pub fn list(&self) -> Vec<PathBuf> {
        let choices = self.choices.read_locked();
        let mut folders: Vec<PathBuf> = Vec::new();
        for folder in self.configured.iter().chain(&choices.added) {
            if !choices.removed.contains(folder) && !folders.contains(folder) {
                folders.push(folder.clone());
            }
        }
        folders
    }

    /// Shares `folder` (an existing folder, absolute path) from now on.
    pub fn add(&self, folder: &Path) -> Result<(), FolderError> {
        if !folder.is_absolute() {
            return Err(FolderError::NotAbsolute(folder.to_path_buf()));
        }
        if !folder.is_dir() {
            return Err(FolderError::NotAFolder(folder.to_path_buf()));
        }
        let current = self.list();
        if current.iter().any(|f| f == folder) {
            return Err(FolderError::AlreadyShared(folder.to_path_buf()));
        }
        if current.len() >= MAX_FOLDERS {
            return Err(FolderError::TooMany);
        }
        self.update(|choices| {
            choices.removed.retain(|f| f != folder);
            if !choices.added.iter().any(|f| f == folder) {
                choices.added.push(folder.to_path_buf());
            }
        })
    }

    /// Stops sharing `folder`.
    pub fn remove(&self, folder: &Path) -> Result<(), FolderError> {
        if !self.list().iter().any(|f| f == folder) {
            return Err(FolderError::NotShared(folder.to_path_buf()));
        }
        self.update(|choices| {
            choices.added.retain(|f| f != folder);
            if self.configured.iter().any(|f| f == folder) {
                choices.removed.push(folder.to_path_buf());
            }
        })
    }

    /// Sees every change of the list (a new version at each).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The folders to scan: those from the settings (a missing one is an
    /// error the scan reports) and those added in the app that still exist
    /// (a missing one is skipped, so a removed drive does not stop the node).
    pub fn list_for_scan(&self) -> Vec<PathBuf> {
        self.list()
            .into_iter()
            .filter(|folder| self.configured.contains(folder) || folder.is_dir())
            .collect()
    }

    fn update(&self, change: impl FnOnce(&mut Choices)) -> Result<(), FolderError> {
        let mut choices = self.choices.write_locked();
        let mut next = choices.clone();
        change(&mut next);
        if let Some(file) = &self.file {
            let bytes = serde_json::to_vec_pretty(&next).expect("choices serialise");
            write_atomically(file, &bytes).map_err(|source| FolderError::Save {
                path: file.clone(),
                source,
            })?;
        }
        *choices = next;
        drop(choices);
        self.version.send_modify(|version| *version += 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_survive_a_restart_and_override_the_settings() {
        let data = tempfile::tempdir().unwrap();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let folders = Folders::load(vec![a.path().to_path_buf()], data.path());
        folders.add(b.path()).unwrap();
        folders.remove(a.path()).unwrap();
        assert_eq!(folders.list(), vec![b.path().to_path_buf()]);
        assert!(matches!(
            folders.add(b.path()),
            Err(FolderError::AlreadyShared(_))
        ));
        assert!(matches!(folders.remove(a.path()), Err(FolderError::NotShared(_))));
        assert!(matches!(
            folders.add(Path::new("relative")),
            Err(FolderError::NotAbsolute(_))
        ));

        let again = Folders::load(vec![a.path().to_path_buf()], data.path());
        assert_eq!(again.list(), vec![b.path().to_path_buf()]);
        again.add(a.path()).unwrap();
        assert_eq!(again.list(), vec![a.path().to_path_buf(), b.path().to_path_buf()]);
    }
}
