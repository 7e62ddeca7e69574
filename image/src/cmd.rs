//! Running the Debian tools the build shells out to.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use crate::error::{Error, Result};

/// Renders a command line for messages, quoting arguments that need it.
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![quote(cmd.get_program())];
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` to completion, capturing stdout and stderr.
///
/// A non-zero exit is an [`Error::Command`] carrying the command line and
/// its stderr, so the operator sees exactly which tool complained and why.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let command = display(cmd);
    tracing::debug!(%command, "running");
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Command {
            command,
            status: output.status.to_string(),
            stderr: tail(&String::from_utf8_lossy(&output.stderr), 40),
        })
    }
}

/// Runs `cmd` and returns its stdout as text.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    let output = run(cmd)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Keeps the last `lines` lines of a (possibly long) tool output.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim().lines().collect();
    let skip = all.len().saturating_sub(lines);
    all[skip..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_odd_arguments() {
        let mut cmd = Command::new("dpkg-query");
        cmd.args(["-W", "-f", "${Package}\t${Version}\n", "x y"]);
        assert_eq!(
            display(&cmd),
            "dpkg-query -W -f '${Package}\t${Version}\n' 'x y'"
        );
    }

    #[test]
    fn failure_carries_command_and_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
    }
}
