//! What an operator installs beside the binary, made from the binary itself: the version
//! line (with the commit and build date `build.rs` records), shell completions and the man
//! page. Both of the latter are generated from the command line's definition, which the
//! caller (`cli`) passes in, so they never fall behind it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use clap_complete::Shell;

/// The commit the binary was built from (12 hex digits), or `unknown`.
pub const COMMIT: &str = env!("MEDIC_GIT_COMMIT");

/// The UTC date of the build (`YYYY-MM-DD`; `SOURCE_DATE_EPOCH`'s when it was set).
pub const BUILD_DATE: &str = env!("MEDIC_BUILD_DATE");

/// What `medic --version` prints after the name.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MEDIC_GIT_COMMIT"),
    ", built ",
    env!("MEDIC_BUILD_DATE"),
    ")"
);

/// A man page that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the man page {path}: {error}")]
pub struct ManError {
    path: PathBuf,
    error: std::io::Error,
}

/// Writes the completion script of `shell` for the command line `cmd`.
pub fn completions(shell: Shell, cmd: &mut clap::Command, out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, cmd, name, out);
}

/// `medic completions SHELL`: the script on standard output.
pub fn print_completions(shell: Shell, mut cmd: clap::Command) -> ExitCode {
    completions(shell, &mut cmd, &mut std::io::stdout().lock());
    ExitCode::SUCCESS
}

/// `medic man`: medic(1) on standard output or, with `dir`, medic.1 and one page per
/// subcommand (medic-serve.1, ...: the pages medic(1) refers to) written into `dir`.
pub fn write_man(cmd: clap::Command, dir: Option<&Path>) -> Result<ExitCode, ManError> {
    // `medic help` has no page of its own: `--help` on each command says the same.
    let cmd = cmd.disable_help_subcommand(true);
    let Some(dir) = dir else {
        let path = PathBuf::from("<stdout>");
        man(cmd, &mut std::io::stdout().lock()).map_err(|error| ManError { path, error })?;
        return Ok(ExitCode::SUCCESS);
    };
    let mut cmd = cmd;
    // Names the subcommands as their pages do: medic-serve, medic-audit-verify, ...
    cmd.build();
    let write = |path: PathBuf, render: &dyn Fn(&mut dyn Write) -> std::io::Result<()>| {
        std::fs::File::create(&path)
            .and_then(|mut f| {
                render(&mut f)?;
                f.sync_all()
            })
            .map_err(|error| ManError { path, error })
    };
    let mut subcommands: Vec<clap::Command> = cmd.get_subcommands().cloned().collect();
    while let Some(sub) = subcommands.pop() {
        subcommands.extend(sub.get_subcommands().cloned());
        let page = clap_mangen::Man::new(sub)
            .date(BUILD_DATE)
            .source(format!("medic {VERSION}"));
        write(dir.join(page.get_filename()), &|w| page.render(w))?;
    }
    let name = format!("{}.1", cmd.get_name());
    write(dir.join(name), &|w| man(cmd.clone(), w))?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the man page (roff) of the command line `cmd`: its synopsis, options and
/// subcommands, with a pointer to the documentation.
pub fn man(cmd: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd).date(BUILD_DATE);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    man.render_version_section(out)?;
    out.write_all(FILES_AND_SEE_ALSO.as_bytes())
}

/// The sections clap does not know of.
const FILES_AND_SEE_ALSO: &str = r#".SH FILES
.TP
\fIconfig/medic.toml\fR
The configuration read by default (\fB\-\-config\fR names another). A packaged medic
keeps it in \fI/etc/medic/medic.toml\fR and its database in \fI/var/lib/medic\fR.
.SH SIGNALS
.TP
\fBSIGHUP\fR
\fBmedic serve\fR reloads its configuration and runbooks; a configuration that does not
check out is refused and the one in force stays.
.TP
\fBSIGINT\fR, \fBSIGTERM\fR
\fBmedic serve\fR stops cleanly.
.SH SEE ALSO
The documentation in the source tree's \fIdocs/\fR: \fIoperating.md\fR (installing and
running medic), \fIconfiguration.md\fR, \fIrunbooks.md\fR, \fIupgrading.md\fR.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("medic")
            .version(VERSION)
            .about("test")
            .subcommand(clap::Command::new("serve").about("Run the engine"))
            .subcommand(clap::Command::new("backup").about("Copy the store"))
    }

    #[test]
    fn the_version_names_the_commit_and_the_build_date() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")), "{VERSION}");
        // git's 12 hex digits, "unknown", or what a packager set: one word either way.
        assert!(
            !COMMIT.is_empty() && !COMMIT.contains(|c: char| c.is_whitespace() || c == ')'),
            "{COMMIT}"
        );
        assert!(
            chrono::NaiveDate::parse_from_str(BUILD_DATE, "%Y-%m-%d").is_ok(),
            "{BUILD_DATE}"
        );
        assert!(VERSION.contains(COMMIT) && VERSION.contains(BUILD_DATE));
    }

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut cli(), &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("backup") && text.contains("serve"),
                "{shell}: {text}"
            );
        }
    }

    #[test]
    fn the_man_page_has_its_sections() {
        let mut out = Vec::new();
        man(cli(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for want in [
            ".TH medic 1",
            ".SH SYNOPSIS",
            ".SH SUBCOMMANDS",
            "backup",
            ".SH SIGNALS",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
    }
}
