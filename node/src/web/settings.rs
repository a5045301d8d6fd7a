//! The settings page: what is in force, and the changes a user saves.
//!
//! Changes are saved in the data folder as `ui-settings.toml`, with the same
//! keys as `canopy.toml`. At start they are read as a layer between the
//! config file and the flags: flags and `CANOPY_*` variables still win,
//! the app's choices win over the config file. The download folder, the
//! bandwidth caps and the number of downloads run at once take effect at
//! once; the others at the next start, which the answer says.
//!
//! Caps are stored in bytes per second, as in `canopy.toml`, but the page
//! sends what the user typed: a number of bytes, or a rate with its unit
//! (`12 MiB/s`, `500 KiB/s`, `2M`), read by [`crate::units::parse_rate`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fileio::write_atomically;

/// File name of the saved changes inside the data folder.
pub const SETTINGS_FILE: &str = "ui-settings.toml";

/// The settings the page shows and can change, in `canopy.toml`'s terms.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EditableSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_rate: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_download_rate: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_active_downloads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ui_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("cannot save {path}: {source}")]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A change asked for by the page: each key absent (unchanged), `null`
/// (back to the default) or a value.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Change {
    #[serde(default, deserialize_with = "present")]
    pub download_dir: Option<Option<PathBuf>>,
    #[serde(default, deserialize_with = "present_rate")]
    pub max_upload_rate: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present_rate")]
    pub max_download_rate: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub max_active_downloads: Option<Option<usize>>,
    #[serde(default, deserialize_with = "present")]
    pub role: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub listen: Option<Option<SocketAddr>>,
    #[serde(default, deserialize_with = "present")]
    pub ui_listen: Option<Option<SocketAddr>>,
    #[serde(default, deserialize_with = "present")]
    pub gateway: Option<Option<SocketAddr>>,
}

/// Tells a key given as `null` from a key left out.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A rate as the page sends it: a number of bytes per second, or text
/// with a unit (`"2 MiB/s"`); an empty text is `null`, no cap.
fn present_rate<'de, D>(deserializer: D) -> Result<Option<Option<u64>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Bytes(u64),
        Text(String),
    }
    let given = Option::<Given>::deserialize(deserializer)?;
    match given {
        None => Ok(Some(None)),
        Some(Given::Bytes(bytes)) => Ok(Some(Some(bytes))),
        Some(Given::Text(text)) if text.trim().is_empty() => Ok(Some(None)),
        Some(Given::Text(text)) => crate::units::parse_rate(&text)
            .map(|bytes| Some(Some(bytes)))
            .map_err(serde::de::Error::custom),
    }
}

impl Change {
    /// Checks the values; returns the keys that need a restart.
    pub fn validate(&self) -> Result<Vec<&'static str>, SettingsError> {
        for (key, rate) in [
            ("max-upload-rate", &self.max_upload_rate),
            ("max-download-rate", &self.max_download_rate),
        ] {
            if let Some(Some(0)) = rate {
                return Err(SettingsError::Invalid {
                    key,
                    reason: "must be at least 1 byte/s (null, or an empty field, for no cap)".into(),
                });
            }
        }
        if let Some(Some(limit)) = self.max_active_downloads {
            let most = crate::download_manager::MAX_ACTIVE_LIMIT;
            if !(1..=most).contains(&limit) {
                return Err(SettingsError::Invalid {
                    key: "max-active-downloads",
                    reason: format!("must be from 1 to {most}"),
                });
            }
        }
        if let Some(Some(role)) = &self.role {
            if !["auto", "leaf", "supernode"].contains(&role.as_str()) {
                return Err(SettingsError::Invalid {
                    key: "role",
                    reason: "must be auto, leaf or supernode".into(),
                });
            }
        }
        if let Some(Some(dir)) = &self.download_dir {
            if !dir.is_absolute() {
                return Err(SettingsError::Invalid {
                    key: "download-dir",
                    reason: "must be an absolute path".into(),
                });
            }
        }
        if let Some(Some(addr)) = &self.ui_listen {
            if !addr.ip().is_loopback() {
                return Err(SettingsError::Invalid {
                    key: "ui-listen",
                    reason: "remote access is set with --ui-listen and --ui-password when starting".into(),
                });
            }
        }
        let mut restart = Vec::new();
        let keys: [(&'static str, bool); 4] = [
            ("role", self.role.is_some()),
            ("listen", self.listen.is_some()),
            ("ui-listen", self.ui_listen.is_some()),
            ("gateway", self.gateway.is_some()),
        ];
        for (key, changed) in keys {
            if changed {
                restart.push(key);
            }
        }
        Ok(restart)
    }

    /// Applies the change to what was saved before.
    pub fn apply(self, saved: &mut EditableSettings) {
        fn set<T>(slot: &mut Option<T>, change: Option<Option<T>>) {
            if let Some(value) = change {
                *slot = value;
            }
        }
        set(&mut saved.download_dir, self.download_dir);
        set(&mut saved.max_upload_rate, self.max_upload_rate);
        set(&mut saved.max_download_rate, self.max_download_rate);
        set(&mut saved.max_active_downloads, self.max_active_downloads);
        set(&mut saved.role, self.role);
        set(&mut saved.listen, self.listen);
        set(&mut saved.ui_listen, self.ui_listen);
        set(&mut saved.gateway, self.gateway);
    }
}

/// What the app saved before (nothing if the file is missing or damaged).
pub fn load(path: &Path) -> EditableSettings {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str(&text).ok())
        .unwrap_or_default()
}

/// Saves `saved` as TOML with `canopy.toml`'s keys.
pub fn save(path: &Path, saved: &EditableSettings) -> Result<(), SettingsError> {
    let mut text =
        String::from("# Settings changed in the desktop app; flags and CANOPY_* variables win over them.\n");
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    if let Some(dir) = &saved.download_dir {
        text += &format!("download-dir = {}\n", quote(&dir.to_string_lossy()));
    }
    if let Some(rate) = saved.max_upload_rate {
        text += &format!("max-upload-rate = {rate}\n");
    }
    if let Some(rate) = saved.max_download_rate {
        text += &format!("max-download-rate = {rate}\n");
    }
    if let Some(limit) = saved.max_active_downloads {
        text += &format!("max-active-downloads = {limit}\n");
    }
    if let Some(role) = &saved.role {
        text += &format!("role = {}\n", quote(role));
    }
    for (key, addr) in [
        ("listen", saved.listen),
        ("ui-listen", saved.ui_listen),
        ("gateway", saved.gateway),
    ] {
        if let Some(addr) = addr {
            text += &format!("{key} = {}\n", quote(&addr.to_string()));
        }
    }
    write_atomically(path, text.as_bytes()).map_err(|source| SettingsError::Save {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_changes_read_back_and_parse_as_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SETTINGS_FILE);
        let change: Change = serde_json::from_str(
            r#"{"download-dir": "/tmp/dl \"x\"", "max-upload-rate": 1000, "role": "leaf", "gateway": "127.0.0.1:8080"}"#,
        )
        .unwrap();
        assert_eq!(change.validate().unwrap(), vec!["role", "gateway"]);
        let mut saved = EditableSettings::default();
        change.apply(&mut saved);
        save(&path, &saved).unwrap();
        assert_eq!(load(&path), saved);

        let reset: Change = serde_json::from_str(r#"{"gateway": null}"#).unwrap();
        reset.apply(&mut saved);
        assert_eq!(saved.gateway, None);
        assert_eq!(saved.role.as_deref(), Some("leaf"));
        let bad: Change = serde_json::from_str(r#"{"role": "king"}"#).unwrap();
        assert!(bad.validate().is_err());

        // Caps as typed, with their units; the queue's limit, bounded.
        let typed: Change = serde_json::from_str(
            r#"{"max-upload-rate": "2 MiB/s", "max-download-rate": "500 KiB/s", "max-active-downloads": 1}"#,
        )
        .unwrap();
        assert_eq!(typed.validate().unwrap(), Vec::<&str>::new());
        typed.apply(&mut saved);
        assert_eq!(saved.max_upload_rate, Some(2 << 20));
        assert_eq!(saved.max_download_rate, Some(500 << 10));
        save(&path, &saved).unwrap();
        assert_eq!(load(&path), saved);
        let cleared: Change = serde_json::from_str(r#"{"max-upload-rate": ""}"#).unwrap();
        assert_eq!(cleared.max_upload_rate, Some(None));
        assert!(serde_json::from_str::<Change>(r#"{"max-upload-rate": "fast"}"#).is_err());
        let many: Change = serde_json::from_str(r#"{"max-active-downloads": 0}"#).unwrap();
        assert!(many.validate().is_err());
        assert!(serde_json::from_str::<Change>(r#"{"data-dir": "/x"}"#).is_err());
    }
}
