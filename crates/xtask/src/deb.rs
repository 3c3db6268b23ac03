//! The Debian package `chat-system`: cargo-deb with its metadata in
//! `crates/chat-node/Cargo.toml`, man pages generated from the binaries' `--help`, and lintian.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::system::{self, cargo, cargo_command, ensure_system_packages, output, status, Needs};

/// The binaries the package ships.
const BINARIES: [&str; 3] = ["chat-node", "chat-bootstrap", "chat-nameserver"];
/// The crate whose `[package.metadata.deb]` describes the package.
const PACKAGE_OWNER: &str = "chat-node";
/// cargo-deb's version, pinned: a package must not change because a tool moved on, and this
/// version still packages a dev-profile build (the test package, see [`test_package`]).
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Which build the package is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// `cargo build --release`: what `cargo xtask deb` ships.
    Release,
    /// The dev build `cargo test` already made, so CI compiles once for the tests and the
    /// package (dependencies are optimised even there, see the workspace's profiles).
    Dev,
}

impl Profile {
    /// Cargo's output directory name under the target directory.
    fn dir(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Dev => "debug",
        }
    }

    fn cargo_name(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Dev => "dev",
        }
    }
}

/// `cargo xtask deb`: builds the release binaries and the package, checks it with lintian and
/// returns its path (`target/debian/chat-system_<version>_<arch>.deb`).
pub(crate) fn release_package() -> Result<PathBuf, String> {
    ensure_system_packages(Needs::Test)?;
    let deb = package(Profile::Release, &system::target_dir().join("debian"))?;
    println!("{}", deb.display());
    Ok(deb)
}

/// The package made from the test build (`target/debian/test/`), for the container test.
pub(crate) fn test_package() -> Result<PathBuf, String> {
    package(
        Profile::Dev,
        &system::target_dir().join("debian").join("test"),
    )
}

fn package(profile: Profile, out_dir: &Path) -> Result<PathBuf, String> {
    ensure_cargo_deb()?;
    match profile {
        Profile::Release => {
            let mut build = vec!["build", "--release", "--bins"];
            for binary in BINARIES {
                build.extend(["-p", binary]);
            }
            cargo(&build)?;
        }
        // Exactly the test suite's build (its feature set includes the dev-dependencies'),
        // so after `cargo test` this compiles nothing.
        Profile::Dev => cargo(&[crate::TEST_SUITE, &["--no-run"]].concat())?,
    }
    let bin_dir = system::target_dir().join(profile.dir());
    write_man_pages(&bin_dir)?;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let mut cargo_deb = cargo_command();
    cargo_deb.args([
        "deb",
        "--package",
        PACKAGE_OWNER,
        "--no-build",
        "--profile",
        profile.cargo_name(),
        "--output",
        &out_dir.to_string_lossy(),
    ]);
    if profile == Profile::Dev {
        // A package that lives for one test: compression time matters, size does not.
        cargo_deb.arg("--fast");
    }
    let printed = output(&mut cargo_deb)?;
    // cargo-deb prints the path of the package it wrote as its last line.
    let deb = printed
        .lines()
        .map(str::trim)
        .rfind(|line| line.ends_with(".deb"))
        .map(PathBuf::from)
        .ok_or_else(|| format!("cargo deb did not name the package it wrote:\n{printed}"))?;
    lintian(&deb)?;
    Ok(deb)
}

fn ensure_cargo_deb() -> Result<(), String> {
    let installed = cargo_command()
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-deb {CARGO_DEB_VERSION}");
    cargo(&[
        "install",
        "cargo-deb",
        "--locked",
        "--version",
        CARGO_DEB_VERSION,
    ])
}

/// Errors fail the task; warnings and notes are shown.
fn lintian(deb: &Path) -> Result<(), String> {
    status(
        Command::new("lintian")
            .args(["--fail-on", "error"])
            .arg(deb),
    )
    .map_err(|error| format!("lintian found errors in {}: {error}", deb.display()))
}

/// `<bin_dir>/man/<binary>.1.gz` for each binary, from its `--help` and `--version` (the way
/// help2man does it, without needing help2man): the text the binary prints is the manual, so
/// the two cannot drift apart.
fn write_man_pages(bin_dir: &Path) -> Result<(), String> {
    let man_dir = bin_dir.join("man");
    std::fs::create_dir_all(&man_dir)
        .map_err(|e| format!("cannot create {}: {e}", man_dir.display()))?;
    for binary in BINARIES {
        let program = bin_dir.join(binary);
        let help = output(Command::new(&program).arg("--help"))?;
        let version = output(Command::new(&program).arg("--version"))?;
        let page = man_page(binary, version.trim(), &help);
        let target = man_dir.join(format!("{binary}.1.gz"));
        gzip_to(page.as_bytes(), &target)?;
    }
    Ok(())
}

/// Compresses `data` into `target` with `gzip -9n` (what Debian policy asks of man pages; no
/// timestamp, so the same text gives the same bytes).
fn gzip_to(data: &[u8], target: &Path) -> Result<(), String> {
    use std::io::Write as _;

    let file = std::fs::File::create(target)
        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let mut gzip = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .map_err(|e| format!("cannot start gzip: {e}"))?;
    gzip.stdin
        .take()
        .expect("piped")
        .write_all(data)
        .map_err(|e| format!("cannot write to gzip: {e}"))?;
    let status = gzip.wait().map_err(|e| format!("gzip: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("gzip failed for {}: {status}", target.display()))
    }
}

/// A roff manual page: NAME from the help's first line, the whole help as DESCRIPTION (kept
/// as printed), and pointers to the configuration and the units.
fn man_page(binary: &str, version: &str, help: &str) -> String {
    let summary = help
        .lines()
        .next()
        .unwrap_or(binary)
        .trim()
        .trim_end_matches('.');
    let summary = summary
        .strip_prefix(&format!("{binary}:"))
        .unwrap_or(summary)
        .trim();
    let mut page = String::new();
    page.push_str(&format!(
        ".TH {} 1 \"\" \"{}\" \"User Commands\"\n",
        roff_escape(&binary.to_uppercase()),
        roff_escape(version)
    ));
    page.push_str(&format!(
        ".SH NAME\n{} \\- {}\n",
        roff_escape(binary),
        roff_escape(summary)
    ));
    page.push_str(".SH DESCRIPTION\n.nf\n");
    for line in help.lines() {
        page.push_str(&roff_line(line));
        page.push('\n');
    }
    page.push_str(".fi\n");
    let unit = if binary == "chat-node" {
        "chat-node@.service".to_owned()
    } else {
        format!("{binary}.service")
    };
    page.push_str(&roff_escape(&format!(
        ".SH FILES\n/etc/chat-system/ (configuration, every key commented)\n.br\n\
         /lib/systemd/system/{unit} (the unit)\n\
         .SH SEE ALSO\n/usr/share/doc/chat-system/README.md\n"
    )));
    page
}

/// Escapes text for roff: backslashes and minus signs.
fn roff_escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// One line of a no-fill block: escaped, and a leading `.` or `'` (a roff request) neutralised.
fn roff_line(line: &str) -> String {
    let escaped = roff_escape(line);
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_keeps_the_help_and_escapes_roff() {
        let help = "A chat-system node: joins its neighbours.\n\n\
                    Usage: chat-node [OPTIONS]\n.hidden request\n  --id <ID>  the \\ id\n";
        let page = man_page("chat-node", "chat-node 0.1.0", help);
        assert!(page.starts_with(".TH CHAT\\-NODE 1 \"\" \"chat\\-node 0.1.0\""));
        assert!(
            page.contains(".SH NAME\nchat\\-node \\- A chat\\-system node: joins its neighbours\n")
        );
        assert!(page.contains("\\&.hidden request\n"), "{page}");
        assert!(page.contains("  \\-\\-id <ID>  the \\e id\n"), "{page}");
        assert!(page.contains("chat\\-node@.service"));
    }
}
