//! Sizes and rates as people write and read them.

/// `1.5 MiB`-style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `1.5 MiB/s`-style rates.
pub fn human_rate(bytes_per_second: u64) -> String {
    format!("{}/s", human_bytes(bytes_per_second))
}

/// Parses a rate as people write it in a form: a byte count as
/// [`parse_bytes`] reads it, with or without a space before the unit and
/// with or without `/s`: `12 MiB/s`, `500 KiB/s`, `2M`, `1048576`.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let without_per_second = trimmed
        .strip_suffix("/s")
        .or_else(|| trimmed.strip_suffix("/S"))
        .unwrap_or(trimmed);
    let mut compact: String = without_per_second
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    // A bare "B" after the number ("4096 B/s") is bytes: no multiplier.
    if compact.ends_with(['B', 'b']) && compact[..compact.len() - 1].ends_with(|c: char| c.is_ascii_digit()) {
        compact.pop();
    }
    parse_bytes(&compact).map_err(|_| format!("{text:?} is not a rate like 500 KiB/s, 12 MiB/s or 2M"))
}

/// A wait that doubles each time it is taken, up to a cap: how often to
/// look again for something that is not there yet.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    next: std::time::Duration,
    cap: std::time::Duration,
}

impl Backoff {
    pub fn new(first: std::time::Duration, cap: std::time::Duration) -> Self {
        Backoff { next: first, cap }
    }

    /// The wait to take now; the one after is twice as long (at most the cap).
    pub fn take(&mut self) -> std::time::Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.cap);
        now
    }
}

/// Parses a duration as people write it on a command line: `90` or `90s`
/// (seconds), `15m`, `2h`, `1d`, `1.5h`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let trimmed = text.trim();
    let (number, unit) = match trimmed.char_indices().last() {
        Some((index, unit)) if unit.is_ascii_alphabetic() => (&trimmed[..index], unit),
        _ => (trimmed, 's'),
    };
    let seconds = match unit.to_ascii_lowercase() {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86_400.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 90s, 15m, 2h)"))?;
    if !value.is_finite() || value < 0.0 || value * seconds > 365.0 * 86_400.0 {
        return Err(format!("{text:?}: a duration from 0 to a year"));
    }
    Ok(std::time::Duration::from_secs_f64(value * seconds))
}

/// Parses a byte count with an optional binary suffix, as aria2 and curl
/// take them: `500K`, `2M`, `1.5G`, `1048576`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    // 5M, 5MB and 5MiB all mean 5 MiB, as aria2 reads them.
    let trimmed = trimmed
        .strip_suffix("iB")
        .or_else(|| trimmed.strip_suffix("ib"))
        .or_else(|| trimmed.strip_suffix('B'))
        .or_else(|| trimmed.strip_suffix('b'))
        .filter(|rest| rest.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(trimmed);
    let (number, multiplier) = match trimmed.char_indices().last() {
        Some((index, suffix)) if suffix.is_ascii_alphabetic() => {
            let multiplier = match suffix.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("{text:?}: unknown unit {suffix:?} (use K, M or G)")),
            };
            (&trimmed[..index], multiplier)
        }
        _ => (trimmed, 1),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 500K, 2M or 1048576"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?} must be a positive size"));
    }
    Ok((value * multiplier as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_doubles_up_to_its_cap() {
        let ms = std::time::Duration::from_millis;
        let mut backoff = Backoff::new(ms(10), ms(50));
        let waits: Vec<_> = (0..5).map(|_| backoff.take()).collect();
        assert_eq!(waits, [ms(10), ms(20), ms(40), ms(50), ms(50)]);
    }

    #[test]
    fn durations_read_as_written() {
        let secs = |text: &str| parse_duration(text).map(|d| d.as_secs_f64());
        assert_eq!(secs("90"), Ok(90.0));
        assert_eq!(secs("90s"), Ok(90.0));
        assert_eq!(secs("15m"), Ok(900.0));
        assert_eq!(secs("1.5h"), Ok(5400.0));
        assert_eq!(secs("2d"), Ok(172_800.0));
        assert!(parse_duration("5w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1m").is_err());
        assert!(parse_duration("400d").is_err(), "a year at most");
    }

    #[test]
    fn sizes_read_and_print() {
        assert_eq!(parse_bytes("500K").unwrap(), 512_000);
        assert_eq!(parse_bytes("2m").unwrap(), 2 << 20);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("1234").unwrap(), 1234);
        assert_eq!(parse_bytes("5MB").unwrap(), 5 << 20);
        assert_eq!(parse_bytes("5MiB").unwrap(), 5 << 20);
        assert!(parse_bytes("2X").is_err() && parse_bytes("-1").is_err() && parse_bytes("").is_err());
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn rates_read_as_typed_in_a_form() {
        assert_eq!(parse_rate("2 MiB/s"), Ok(2 << 20));
        assert_eq!(parse_rate("12 MiB/s"), Ok(12_582_912));
        assert_eq!(parse_rate(" 500 KiB/s "), Ok(512_000));
        assert_eq!(parse_rate("2M"), Ok(2 << 20));
        assert_eq!(parse_rate("1.5 MB/s"), Ok(1_572_864));
        assert_eq!(parse_rate("4096"), Ok(4096));
        assert_eq!(parse_rate("4096 B/s"), Ok(4096));
        assert!(parse_rate("fast").unwrap_err().contains("KiB/s"));
        assert!(parse_rate("2 X/s").is_err());
        assert_eq!(human_rate(12_582_912), "12.0 MiB/s");
    }
}
