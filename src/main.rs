//! The `kreply` command line. Arguments are few, so they are parsed by hand.

#![forbid(unsafe_code)]

use kreply::check_config::{self, Scope};
use kreply::config::{Config, DEFAULT_CONFIG_PATH};
use kreply::error::StartupError;
use kreply::mock_pg::{self, MockPgOptions};
use kreply::{gateway, worker};
use std::path::PathBuf;
use std::process::ExitCode;

/// The static (musl) build's allocator: musl's malloc is slow under many threads.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
kreply: HTTP payment calls answered through Kafka request-reply, one reply topic per host.

Usage:
  kreply gateway [--config PATH] [--print-route]
  kreply worker [--config PATH]
  kreply check-config [--config PATH] [--print] [gateway|worker]
  kreply mock-pg [--listen ADDR] [--latency-ms N] [--jitter-ms N] [--failure-rate F]
                 [--decline-over AMOUNT] [--slow-ms N]
  kreply --help | --version

Commands:
  gateway        Serve POST /v1/payments/{operation}, /healthz and /readyz.
  worker         Consume payment requests in a group, charge the PG once, reply.
  check-config   Check what a role needs: the gateway its host-table route, the brokers,
                 its request, reply and dead-letter topics; the worker its PG URL, the
                 brokers, its request and results topics. Without a role, both.
                 Print a report and exit non-zero on the first problem.
  mock-pg        A payment provider simulator (orders named DECLINE*, FAIL*, SLOW*
                 are declined, fail, or are slow); GET /charges counts charges by key.

Options:
  --config PATH  The JSON config file (default: $KREPLY_CONFIG, else etc/kreply.json).
  --print-route  Print this host's reply route (IP, suffix, reply topic, and the
                 reply partition in partition-per-host routing) and exit.
  --print        (check-config) Print the effective config as JSON (the file, the
                 environment's overrides, the defaults; the password as \"***\") and
                 exit, without reaching the brokers.

Environment:
  KREPLY_CONFIG   config file path      KREPLY_BROKERS  host:port[,host:port...]
  KREPLY_LISTEN   HTTP ip:port          KREPLY_HOST_IP  IP to look up in the host table
  KREPLY_PG_URL   the worker's PG URL   KREPLY_METRICS_LISTEN  the worker's /metrics ip:port
  RUST_LOG        log filter (default: info,krafka=warn)
  KREPLY_LOG_FORMAT  json: one JSON object per line (ts, level, target, message)
";

/// What the command line asked for.
enum Command {
    Help,
    Version,
    Gateway {
        config: PathBuf,
        print_route: bool,
    },
    Worker {
        config: PathBuf,
    },
    CheckConfig {
        config: PathBuf,
        scope: Scope,
        print: bool,
    },
    MockPg(MockPgOptions),
}

fn parse(args: &[String]) -> Result<Command, String> {
    let mut args = args.iter();
    match args.next().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => Ok(Command::Help),
        Some("-V" | "--version") => Ok(Command::Version),
        Some("mock-pg") => MockPgOptions::parse(args.as_slice()).map(Command::MockPg),
        Some(command @ ("gateway" | "worker" | "check-config")) => {
            parse_daemon(command, args.as_slice())
        }
        Some(other) => Err(unknown("command", other, COMMANDS)),
    }
}

/// What `parse` accepts as a command, for suggestions.
const COMMANDS: &[&str] = &["gateway", "worker", "check-config", "mock-pg", "help"];
/// The options of `worker`; the gateway adds `--print-route`, `check-config` `--print` and
/// a role.
const DAEMON_OPTIONS: &[&str] = &["--config", "--help"];
const GATEWAY_OPTIONS: &[&str] = &["--config", "--print-route", "--help"];
const CHECK_OPTIONS: &[&str] = &["--config", "--print", "--help"];
/// The roles `check-config` takes.
const ROLES: &[&str] = &["gateway", "worker"];

/// "unknown option \"--confg\" (did you mean \"--config\"?)", the suggestion only for a slip.
fn unknown(what: &str, word: &str, candidates: &[&str]) -> String {
    match nearest(word, candidates) {
        Some(near) => format!("unknown {what} \"{word}\" (did you mean \"{near}\"?)"),
        None => format!("unknown {what} \"{word}\""),
    }
}

/// The candidate closest to a mistyped `word`, if a slip of at most two letters.
fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// Levenshtein distance: letters inserted, deleted or replaced to turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let replaced = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = replaced.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// `gateway`, `worker` and `check-config` options: `--config PATH`, `--print-route` for the
/// gateway, `--print` and a role for `check-config`.
fn parse_daemon(command: &str, args: &[String]) -> Result<Command, String> {
    let mut args = args.iter();
    let mut config = std::env::var_os("KREPLY_CONFIG").map(PathBuf::from);
    let (mut print_route, mut print, mut role) = (false, false, None);
    let checking = command == "check-config";
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => {
                let path = args.next().ok_or("--config needs a path")?;
                config = Some(PathBuf::from(path));
            }
            "--print-route" if command == "gateway" => print_route = true,
            "--print" if checking => print = true,
            "-h" | "--help" => return Ok(Command::Help),
            word if checking && Scope::parse(word).is_some() => {
                if let Some(first) = role {
                    return Err(format!(
                        "check-config checks one role, \"{first}\" or \"{word}\"; name neither to check both"
                    ));
                }
                role = Some(word);
            }
            other => return Err(unknown_word(command, other)),
        }
    }
    let config = config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let scope = role.and_then(Scope::parse).unwrap_or(Scope::Both);
    Ok(match command {
        "worker" => Command::Worker { config },
        "check-config" => Command::CheckConfig {
            config,
            scope,
            print,
        },
        _ => Command::Gateway {
            config,
            print_route,
        },
    })
}

/// What `command` says of a word it does not take: `check-config` takes a role too.
fn unknown_word(command: &str, word: &str) -> String {
    match command {
        "gateway" => unknown("option", word, GATEWAY_OPTIONS),
        "check-config" if !word.starts_with('-') => match nearest(word, ROLES) {
            Some(_) => unknown("role", word, ROLES),
            None => format!("unknown role \"{word}\" (the roles are gateway and worker)"),
        },
        "check-config" => unknown("option", word, CHECK_OPTIONS),
        _ => unknown("option", word, DAEMON_OPTIONS),
    }
}

fn print_route(path: &std::path::Path) -> Result<(), StartupError> {
    let config = Config::load(path)?;
    let route = gateway::resolve_route(&config)?;
    let partition = route
        .partition
        .map_or(String::new(), |p| format!(" reply_partition={p}"));
    println!(
        "host_ip={} suffix={} reply_topic={}{partition}",
        route.host_ip, route.suffix, route.topic
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A report reads better without the startup log lines or the client's retries (its
    // sentence says what failed); RUST_LOG still wins.
    let quiet = args.first().is_some_and(|a| a == "check-config");
    // krafka's own lines (rebalances, fenced producers, lost connections) are bridged in
    // from `tracing` at warn: its info lines are per-request chatter.
    let filter = if quiet {
        "warn,krafka=off"
    } else {
        "info,krafka=warn"
    };
    // Under systemd: priorities journald reads, no second timestamp; KREPLY_LOG_FORMAT=json
    // for a log shipper.
    kreply::log_format::init(filter);
    let result = match parse(&args) {
        Err(why) => {
            eprintln!("kreply: {why}; run \"kreply --help\" for usage");
            return ExitCode::from(2);
        }
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("kreply {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Gateway {
            config,
            print_route: true,
        }) => print_route(&config),
        Ok(Command::Gateway { config, .. }) => gateway::run(&config),
        Ok(Command::Worker { config }) => worker::run(&config),
        Ok(Command::CheckConfig {
            config,
            print: true,
            ..
        }) => check_config::print(&config),
        Ok(Command::CheckConfig { config, scope, .. }) => check_config::run(&config, scope),
        Ok(Command::MockPg(options)) => mock_pg::run(options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            kreply::log_format::fatal(&format!("kreply: {e}"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_inserted_deleted_and_replaced_letters() {
        assert_eq!(edit_distance("gateway", "gateway"), 0);
        assert_eq!(edit_distance("gatewy", "gateway"), 1);
        assert_eq!(edit_distance("wroker", "worker"), 2);
        assert_eq!(edit_distance("", "help"), 4);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn an_unknown_command_suggests_the_nearest_one() {
        let args = |word: &str| vec![word.to_string()];
        let Err(why) = parse(&args("gatewy")) else {
            panic!("\"gatewy\" parsed")
        };
        assert_eq!(
            why,
            "unknown command \"gatewy\" (did you mean \"gateway\"?)"
        );
        let Err(why) = parse(&args("chek-config")) else {
            panic!("\"chek-config\" parsed")
        };
        assert!(why.ends_with("(did you mean \"check-config\"?)"), "{why}");
        let Err(why) = parse(&args("teleport")) else {
            panic!("\"teleport\" parsed")
        };
        assert_eq!(why, "unknown command \"teleport\"");
    }

    #[test]
    fn an_unknown_option_suggests_the_nearest_one_of_that_command() {
        let args = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let Err(why) = parse(&args(&["gateway", "--confg", "x"])) else {
            panic!("--confg parsed")
        };
        assert_eq!(
            why,
            "unknown option \"--confg\" (did you mean \"--config\"?)"
        );
        let Err(why) = parse(&args(&["gateway", "--print-rout"])) else {
            panic!("--print-rout parsed")
        };
        assert!(why.ends_with("(did you mean \"--print-route\"?)"), "{why}");
        // The worker has no --print-route, so it is not suggested there.
        let Err(why) = parse(&args(&["worker", "--print-rout"])) else {
            panic!("worker --print-rout parsed")
        };
        assert_eq!(why, "unknown option \"--print-rout\"");
    }

    /// The role and `--print` of `check-config`, as (scope, print).
    fn check_args(words: &[&str]) -> Result<(Scope, bool), String> {
        let mut args = vec!["check-config".to_string()];
        args.extend(words.iter().map(|w| w.to_string()));
        match parse(&args)? {
            Command::CheckConfig { scope, print, .. } => Ok((scope, print)),
            _ => panic!("{words:?} parsed as another command"),
        }
    }

    #[test]
    fn check_config_takes_one_role_and_print_anywhere() {
        assert_eq!(check_args(&[]), Ok((Scope::Both, false)));
        assert_eq!(check_args(&["worker"]), Ok((Scope::Worker, false)));
        assert_eq!(
            check_args(&["--config", "k.json", "gateway", "--print"]),
            Ok((Scope::Gateway, true))
        );
        let twice = check_args(&["worker", "gateway"]).unwrap_err();
        assert_eq!(
            twice,
            "check-config checks one role, \"worker\" or \"gateway\"; name neither to check both"
        );
        let slip = check_args(&["wroker"]).unwrap_err();
        assert_eq!(slip, "unknown role \"wroker\" (did you mean \"worker\"?)");
        let other = check_args(&["mock-pg"]).unwrap_err();
        assert_eq!(
            other,
            "unknown role \"mock-pg\" (the roles are gateway and worker)"
        );
        let option = check_args(&["--prnt"]).unwrap_err();
        assert_eq!(
            option,
            "unknown option \"--prnt\" (did you mean \"--print\"?)"
        );
        // The other commands take no role and no --print.
        let Err(why) = parse(&["worker".to_string(), "--print".to_string()]) else {
            panic!("worker --print parsed")
        };
        assert_eq!(why, "unknown option \"--print\"");
    }
}
