//! CPU time (user + system) spent by a process, or by the threads of this process with a
//! given name, from `/proc`: the benchmark's "CPU µs per request" is the difference of two
//! readings divided by the requests answered between them. `/proc` needs no dependency.

use std::sync::OnceLock;
use std::time::Duration;

/// The kernel's clock ticks per second, in which `/proc/*/stat` counts CPU time.
pub fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// `(name, utime + stime in ticks)` from the text of a `/proc/.../stat` file. The name sits
/// in parentheses and may itself hold spaces or parentheses, so the fields are counted from
/// the last `)`: utime and stime are fields 14 and 15 of the line.
pub fn parse_stat(text: &str) -> Option<(&str, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 (the state), so field N is fields[N - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((&text[open + 1..close], utime + stime))
}

/// CPU time of process `pid` so far; `None` once it is gone.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ticks(parse_stat(&text)?.1))
}

/// CPU time so far of the live threads of this process whose name starts with `prefix`
/// (Tokio's `thread_name`, cut to 15 bytes by the kernel). Threads that ended are not
/// counted.
pub fn own_threads_cpu(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let total = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .filter_map(|text| {
            let (name, used) = parse_stat(&text)?;
            name.starts_with(prefix).then_some(used)
        })
        .sum();
    ticks(total)
}

fn ticks(count: u64) -> Duration {
    Duration::from_secs_f64(count as f64 / ticks_per_second() as f64)
}
