//! Sets `KREPLY_COMMIT`, the commit `kreply_build_info` reports: `KREPLY_COMMIT` from the
//! build's environment (a package built from a tarball), else `git rev-parse HEAD` of
//! this checkout, else "unknown". Without git, or without `.git`, the build still works.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KREPLY_COMMIT");
    let commit = std::env::var("KREPLY_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(head_of_this_checkout)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=KREPLY_COMMIT={commit}");
}

/// HEAD's short hash, if the package is the top of a git checkout (not a tarball unpacked
/// inside some other repository).
fn head_of_this_checkout() -> Option<String> {
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let here = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    if Path::new(&top).canonicalize().ok()? != Path::new(&here).canonicalize().ok()? {
        return None;
    }
    // Run again when HEAD moves: every commit and checkout appends to HEAD's reflog.
    let reflog = Path::new(&git(&["rev-parse", "--git-dir"])?).join("logs/HEAD");
    if reflog.exists() {
        println!("cargo:rerun-if-changed={}", reflog.display());
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
