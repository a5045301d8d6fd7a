//! Who may use the desktop app's API.
//!
//! As Syncthing does: the API is bound to loopback; a random key is
//! generated once into the data folder (`api-key`, mode 0600) and embedded
//! in the page when it is served, and every `/api` request must carry it
//! (`X-API-Key` header; `?key=` on `/api/events`, which `EventSource`
//! cannot add headers to). Other web sites cannot read the page (no CORS
//! headers are ever sent), so they cannot learn the key, and a request
//! whose `Host` is not a loopback name is refused, which defeats DNS
//! rebinding. Remote access is only possible with a password configured:
//! a request naming another host must then carry it by HTTP Basic
//! authentication (any user name).

use std::io::Write;
use std::path::Path;

/// File name of the key inside the data folder.
pub const KEY_FILE: &str = "api-key";

/// Reads the API key from `data_dir`, creating a random one (readable by
/// this user only) the first time.
pub fn load_or_create_key(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(KEY_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key = text.trim();
        if key.len() >= 32 && key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(key.to_string());
        }
        tracing::warn!(file = %path.display(), "replacing a malformed API key");
    }
    let mut bytes = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| std::io::Error::other("no system randomness"))?;
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    file.write_all(key.as_bytes())?;
    file.sync_all()?;
    Ok(key)
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a `Host` header names this machine's loopback (`localhost`,
/// `127.0.0.1`, `[::1]`, with or without a port).
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, after)) if after.is_empty() || after.starts_with(':') => inside,
            _ => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether an `Authorization` header carries `password` by HTTP Basic.
pub fn basic_auth_matches(header: Option<&str>, password: &str) -> bool {
    let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
        return false;
    };
    let Some(decoded) = base64_decode(encoded.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    match text.split_once(':') {
        Some((_, given)) => same_secret(given, password),
        None => false,
    }
}

/// Standard base64 with padding; `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if !text.len().is_multiple_of(4) || text.len() > 4096 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let bytes = text.as_bytes();
    for (index, group) in bytes.chunks(4).enumerate() {
        let last = index == bytes.len() / 4 - 1;
        let mut value: u32 = 0;
        let mut padding = 0;
        for (i, &byte) in group.iter().enumerate() {
            let digit = if byte == b'=' && last && i >= 2 {
                padding += 1;
                0
            } else if padding > 0 {
                return None;
            } else {
                ALPHABET.iter().position(|&c| c == byte)? as u32
            };
            value = value << 6 | digit;
        }
        let decoded = [(value >> 16) as u8, (value >> 8) as u8, value as u8];
        out.extend_from_slice(&decoded[..3 - padding]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_pass_the_host_check() {
        for host in [
            "localhost",
            "localhost:4664",
            "127.0.0.1:4664",
            "[::1]:4664",
            "[::1]",
            "app.localhost",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.com",
            "evil.com:4664",
            "127.0.0.1.evil.com",
            "10.0.0.2:4664",
            "[::1]x",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn basic_auth_checks_the_password() {
        // "canopy:s3cret" and "canopy:wrong"
        assert!(basic_auth_matches(Some("Basic Y2Fub3B5OnMzY3JldA=="), "s3cret"));
        assert!(!basic_auth_matches(Some("Basic Y2Fub3B5Ondyb25n"), "s3cret"));
        assert!(!basic_auth_matches(Some("Basic !!!!"), "s3cret"));
        assert!(!basic_auth_matches(None, "s3cret"));
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("Y=Q="), None);
    }

    #[test]
    fn the_key_is_made_once_and_private() {
        let data = tempfile::tempdir().unwrap();
        let key = load_or_create_key(data.path()).unwrap();
        assert_eq!(key.len(), 48);
        assert_eq!(load_or_create_key(data.path()).unwrap(), key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(same_secret(&key, &key.clone()));
        assert!(!same_secret(&key, "short"));
    }
}
