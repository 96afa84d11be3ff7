//! What a benchmark report says about the run before its tables: the machine, its load,
//! the commit and binary measured, and the broker versions (`bench.rs`, `scale.rs`).

use std::process::Command;

/// The output of a command, trimmed; `-` when it cannot run.
pub fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map_or("-".into(), |out| {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
}

/// The three load averages `uptime` shows.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'));
    model.map_or("-".into(), |(_, name)| name.trim().to_string())
}

/// What the report says about the run before its table.
pub struct Machine {
    pub date: String,
    pub cores: usize,
    pub cpu: String,
    pub load_at_start: String,
    pub commit: String,
    /// Which kreply binary the rows measure.
    pub binary: String,
    pub tansu: String,
    /// The krafka whose test broker serves the Kafka-rules rows.
    pub krafka: String,
}

impl Machine {
    pub fn now() -> Machine {
        let dirty = !command_output("git", &["status", "--porcelain", "--untracked-files=no"])
            .trim_matches('-')
            .is_empty();
        let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
        let tansu = std::env::var("TANSU").unwrap_or_else(|_| "tansu".into());
        Machine {
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu: cpu_model(),
            load_at_start: load_average(),
            commit: if dirty {
                format!("{commit} with uncommitted changes")
            } else {
                commit
            },
            binary: std::env::var("KREPLY_BIN").map_or_else(
                |_| "this cargo build (glibc malloc)".into(),
                |path| format!("binary {path}"),
            ),
            tansu: command_output(&tansu, &["--version"]),
            krafka: locked_version("krafka"),
        }
    }
}

/// The version of `package` in `Cargo.lock`; `-` when it is not there.
pub fn locked_version(package: &str) -> String {
    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock");
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    let mut lines = text.lines();
    let name = format!("name = \"{package}\"");
    lines.find(|l| *l == name);
    let version = lines.next().and_then(|l| l.strip_prefix("version = \""));
    version.map_or("-".into(), |v| {
        format!("{package} {}", v.trim_end_matches('"'))
    })
}
