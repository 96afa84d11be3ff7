//! How a log line looks. Three shapes, chosen at startup:
//!
//! - env_logger's own, `[2026-01-01T10:00:00Z INFO  kreply::gateway] message`, on a
//!   terminal or in a file;
//! - under systemd's journal, a `<N>` priority prefix and no timestamp:
//!   `<6>[INFO  kreply::gateway] message`. journald stamps each line itself (a second
//!   timestamp only widens the line) and takes the prefix as the line's priority, so
//!   `journalctl -p warning` shows the warnings and errors alone;
//! - with `KREPLY_LOG_FORMAT=json`, one JSON object per line, `ts`, `level`, `target`,
//!   `message`, for a log shipper. Under the journal it gets the prefix too, which
//!   journald strips, so the stored message is the JSON object alone.
//!
//! The journal is recognised the way systemd documents: `$JOURNAL_STREAM` names the
//! device and inode of the stream systemd connected, and stderr is still that stream (a
//! child whose stderr was redirected to a file inherits the variable, not the journal).

use log::Level;
use std::io::Write;
use std::sync::OnceLock;

/// The variable that asks for JSON lines.
const FORMAT_VARIABLE: &str = "KREPLY_LOG_FORMAT";

/// The shape chosen at startup, for [`fatal`].
static CHOSEN: OnceLock<Format> = OnceLock::new();

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Format {
    /// stderr is systemd's journal stream: a priority prefix, no timestamp.
    journal: bool,
    json: bool,
}

/// Starts logging to stderr: `RUST_LOG`, else `default_filter`, in the shape the
/// environment asks for.
pub fn init(default_filter: &str) {
    let requested = std::env::var(FORMAT_VARIABLE).ok();
    let format = Format {
        journal: stderr_is_journal(),
        json: requested.as_deref() == Some("json"),
    };
    CHOSEN.get_or_init(|| format);
    let filter = env_logger::Env::default().default_filter_or(default_filter);
    let mut builder = env_logger::Builder::from_env(filter);
    if format != Format::default() {
        builder.format(move |buf, record| {
            let ts = buf.timestamp_millis().to_string();
            let message = record.args().to_string();
            let line = format.line(&ts, record.level(), record.target(), &message);
            writeln!(buf, "{line}")
        });
    }
    builder.init();
    if let Some(other) = requested.filter(|r| r != "json" && r != "text") {
        log::warn!("{FORMAT_VARIABLE}={other:?} is neither \"json\" nor \"text\"; logging text");
    }
}

/// Writes the one sentence a failed start ends with to stderr, whatever the log filter:
/// as it is, or under the journal as an error (`<3>`), so that `journalctl -p err` shows
/// why a unit failed. It stays a plain sentence in JSON mode too.
pub fn fatal(sentence: &str) {
    let journal = CHOSEN.get().is_some_and(|format| format.journal);
    match journal {
        true => eprintln!("{}{sentence}", priority(Level::Error)),
        false => eprintln!("{sentence}"),
    }
}

impl Format {
    /// The whole line for one record, without the final newline. `ts` is used by JSON
    /// lines only: a text line reaches this function only under the journal.
    fn line(self, ts: &str, level: Level, target: &str, message: &str) -> String {
        if self.json {
            let line = json_line(ts, level, target, message);
            return match self.journal {
                true => format!("{}{line}", priority(level)),
                false => line,
            };
        }
        journal_lines(level, target, message)
    }
}

/// syslog's priority as journald reads it from the start of a line.
fn priority(level: Level) -> &'static str {
    match level {
        Level::Error => "<3>",
        Level::Warn => "<4>",
        Level::Info => "<6>",
        Level::Debug | Level::Trace => "<7>",
    }
}

/// env_logger's text without its timestamp, each line with the priority: journald makes
/// every line of a message an entry of its own, and a line without a prefix would be
/// stored as info.
fn journal_lines(level: Level, target: &str, message: &str) -> String {
    let prefix = priority(level);
    let mut lines = message.split('\n');
    let first = lines.next().unwrap_or_default();
    let mut text = format!("{prefix}[{level:<5} {target}] {first}");
    for more in lines {
        text.push('\n');
        text.push_str(prefix);
        text.push_str(more);
    }
    text
}

/// One JSON object, its keys in the order a person reads them (`json!` would sort them);
/// serde_json escapes quotes, backslashes and newlines, so a message never breaks the
/// one-object-per-line rule.
fn json_line(ts: &str, level: Level, target: &str, message: &str) -> String {
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    format!(
        "{{\"ts\":{},\"level\":{},\"target\":{},\"message\":{}}}",
        quoted(ts),
        quoted(level.as_str()),
        quoted(target),
        quoted(message)
    )
}

/// Whether stderr is the stream `$JOURNAL_STREAM` names.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(named) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(stat) => names_stream(&named, stat.dev(), stat.ino()),
        Err(_) => false,
    }
}

/// Whether `$JOURNAL_STREAM` (`DEVICE:INODE`, both decimal) names the stream `dev`/`ino`.
fn names_stream(named: &str, dev: u64, ino: u64) -> bool {
    let Some((device, inode)) = named.split_once(':') else {
        return false;
    };
    device.parse() == Ok(dev) && inode.parse() == Ok(ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOURNAL: Format = Format {
        journal: true,
        json: false,
    };

    #[test]
    fn journal_lines_carry_the_priority_and_no_timestamp() {
        let line = |level| JOURNAL.line("2026-01-01T10:00:00.000Z", level, "kreply::worker", "m");
        assert_eq!(line(Level::Error), "<3>[ERROR kreply::worker] m");
        assert_eq!(line(Level::Warn), "<4>[WARN  kreply::worker] m");
        assert_eq!(line(Level::Info), "<6>[INFO  kreply::worker] m");
        assert_eq!(line(Level::Debug), "<7>[DEBUG kreply::worker] m");
        assert_eq!(line(Level::Trace), "<7>[TRACE kreply::worker] m");
    }

    #[test]
    fn every_line_of_a_multi_line_message_keeps_its_priority() {
        let text = JOURNAL.line("", Level::Warn, "kreply", "first\nsecond");
        assert_eq!(text, "<4>[WARN  kreply] first\n<4>second");
    }

    #[test]
    fn a_json_line_is_one_object_with_ts_level_target_and_message() {
        let json = Format {
            journal: false,
            json: true,
        };
        let message = "payment \"x\"\nsecond line \\ done";
        let line = json.line(
            "2026-01-01T10:00:00.123Z",
            Level::Warn,
            "kreply::gateway",
            message,
        );
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("{\"ts\":\"2026-01-01T10:00:00.123Z\",\"level\":"),
            "{line}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "ts": "2026-01-01T10:00:00.123Z",
                "level": "WARN",
                "target": "kreply::gateway",
                "message": message,
            })
        );
    }

    #[test]
    fn json_under_the_journal_gets_the_prefix_journald_strips() {
        let both = Format {
            journal: true,
            json: true,
        };
        let line = both.line("t", Level::Error, "kreply", "m");
        let object = line.strip_prefix("<3>").expect(&line);
        assert!(
            serde_json::from_str::<serde_json::Value>(object).is_ok(),
            "{line}"
        );
    }

    #[test]
    fn the_journal_stream_must_be_stderr_itself() {
        assert!(names_stream("2049:123456", 2049, 123456));
        assert!(!names_stream("2049:123456", 2049, 654321));
        assert!(!names_stream("2049:123456", 8, 123456));
        assert!(!names_stream("", 2049, 123456));
        assert!(!names_stream("2049", 2049, 123456));
    }
}
