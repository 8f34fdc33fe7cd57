//! Running local programs (`ip`, `ssh`, `scp`, `ssh-keygen`) as child processes with a
//! deadline. Every external command of the control process goes through [`run`], so a hung
//! child (an unreachable host, a stuck `ip`) becomes a typed [`CmdError::Timeout`] instead of
//! a hung test, and the child is killed by its pid.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// What a finished child printed and how it exited.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Why a child could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {timeout_ms} ms (killed)")]
    Timeout { command: String, timeout_ms: u128 },
    #[error("`{command}` exited with {code:?}: {stderr}")]
    Failed {
        command: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error("waiting for `{command}`: {source}")]
    Wait {
        command: String,
        source: std::io::Error,
    },
}

/// A short printable form of a command for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    const LIMIT_CHARS: usize = 300;
    if text.len() > LIMIT_CHARS {
        let mut cut = LIMIT_CHARS;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// Runs `cmd` with stdin from /dev/null, collecting stdout and stderr, killing it (by its pid,
/// via `Child::kill`) when `timeout` passes. A non-zero exit is returned as output, not as an
/// error: see [`run_ok`] for that. The child gets its own process group, so a Ctrl-C at the
/// terminal reaches only the control process, whose handler heals and tears down in order,
/// instead of killing in-flight ssh commands halfway.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput, CmdError> {
    let command = describe(cmd);
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| CmdError::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    // Readers run on their own threads so a chatty child cannot fill a pipe and block. A
    // grandchild (an ssh ControlPersist master, a daemon) may keep a pipe open after the child
    // exits, so the readers are awaited with a deadline, never joined blindly.
    let (sender, receiver) = mpsc::channel::<(bool, String)>();
    if let Some(mut out) = child.stdout.take() {
        let sender = sender.clone();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            let _ = sender.send((true, text));
        });
    }
    if let Some(mut err) = child.stderr.take() {
        let sender = sender.clone();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            let _ = sender.send((false, text));
        });
    }
    drop(sender);
    let started = Instant::now();
    let mut poll = Duration::from_micros(200);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => return Err(CmdError::Wait { command, source }),
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CmdError::Timeout {
                command,
                timeout_ms: timeout.as_millis(),
            });
        }
        thread::sleep(poll);
        poll = (poll * 2).min(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    const READER_GRACE: Duration = Duration::from_millis(500);
    for _ in 0..2 {
        match receiver.recv_timeout(READER_GRACE) {
            Ok((true, text)) => stdout = text,
            Ok((false, text)) => stderr = text,
            Err(_) => break,
        }
    }
    Ok(CmdOutput {
        code: status.code(),
        stdout,
        stderr,
    })
}

/// Like [`run`], but a non-zero exit is a [`CmdError::Failed`] carrying stderr.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput, CmdError> {
    let command = describe(cmd);
    let output = run(cmd, timeout)?;
    if output.success() {
        Ok(output)
    } else {
        Err(CmdError::Failed {
            command,
            code: output.code,
            stderr: output.stderr.trim().to_string(),
        })
    }
}

/// Quotes `text` for a POSIX shell: the result is one word whatever `text` holds.
pub fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b))
    {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_plain_words_and_wraps_the_rest() {
        assert_eq!(shell_quote("/var/tmp/rj/x"), "/var/tmp/rj/x");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn quoted_text_survives_a_real_shell() {
        let tricky = "a 'b' \"c\" $HOME `x` ; \\ *";
        let out = run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(tricky))),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out.stdout, tricky);
    }

    #[test]
    fn timeout_kills_the_child() {
        let started = Instant::now();
        let err = run(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, CmdError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn failure_carries_stderr_and_code() {
        let err = run_ok(
            Command::new("sh").arg("-c").arg("echo nope >&2; exit 3"),
            Duration::from_secs(5),
        )
        .unwrap_err();
        match err {
            CmdError::Failed { code, stderr, .. } => {
                assert_eq!(code, Some(3));
                assert_eq!(stderr, "nope");
            }
            other => panic!("unexpected {other}"),
        }
    }
}
