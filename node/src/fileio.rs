//! Positional file I/O and crash-safe writes, shared by serving, fetching
//! and the caches.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Reads exactly `buffer.len()` bytes at `offset`, without moving a cursor,
/// so many tasks can read one file at once.
pub fn read_exact_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buffer, offset)
    }
    #[cfg(windows)]
    {
        let (mut buffer, mut offset) = (buffer, offset);
        while !buffer.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(file, buffer, offset)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => {
                    buffer = &mut buffer[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// Writes all of `buffer` at `offset`, without moving a cursor.
pub fn write_all_at(file: &File, buffer: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buffer, offset)
    }
    #[cfg(windows)]
    {
        let (mut buffer, mut offset) = (buffer, offset);
        while !buffer.is_empty() {
            match std::os::windows::fs::FileExt::seek_write(file, buffer, offset)? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => {
                    buffer = &buffer[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new
/// content, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}
