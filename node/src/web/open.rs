//! Opening a page or a folder on the desktop: `xdg-open` on Linux and the
//! BSDs, `open` on macOS, on Windows `explorer.exe` for a folder and
//! url.dll for a URL (never `cmd /C start`: cmd would read `&` or `^` in a
//! folder's name as its own syntax and run the rest as a command).

use std::process::{Command, Stdio};

/// Asks the desktop to open `target` (a URL or a folder). The opener runs
/// detached; an error says why it could not be started.
pub fn open(target: &str) -> Result<(), String> {
    let (program, args): (&str, Vec<&str>) = if cfg!(target_os = "macos") {
        ("open", vec![target])
    } else if cfg!(windows) {
        // Neither parses its argument as a shell would: url.dll hands a
        // URL to the default browser, explorer.exe opens a folder.
        match target.starts_with("http://") || target.starts_with("https://") {
            true => ("rundll32", vec!["url.dll,FileProtocolHandler", target]),
            false => ("explorer.exe", vec![target]),
        }
    } else {
        ("xdg-open", vec![target])
    };
    let mut child = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    // Reap it whenever it exits, so no zombie is left behind.
    std::thread::spawn(move || child.wait());
    Ok(())
}
