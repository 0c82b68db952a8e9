//! Runs the system tools that have no library (mkfs.*, later lvm and zfs tools). One place, so
//! every invocation is logged the same way and failures carry the command line and stderr.

use crate::error::{DriverError, Result};
use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// Finds `program` on PATH (or the sbin dirs, which a root shell does not always have on PATH).
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Runs `program args...`, returns stdout. `purpose` finishes the sentence "needed to ...".
pub fn run<I, S>(program: &str, args: I, purpose: &'static str) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let exe = which(program).ok_or_else(|| DriverError::MissingTool {
        program: program.to_string(),
        purpose,
    })?;
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let line = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(command = %line, "exec");
    let out = Command::new(&exe)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DriverError::io("execute", &exe, e))?;
    if !out.status.success() {
        // Errors are one line: fold the tool's output.
        let fold = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        };
        let stderr = fold(&out.stderr);
        return Err(DriverError::Command {
            command: line,
            status: out.status.to_string(),
            stderr: if stderr.is_empty() {
                fold(&out.stdout)
            } else {
                stderr
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_is_named() {
        let err = run("blkdrv-no-such-tool", ["x"], "test").unwrap_err();
        assert!(err.to_string().contains("blkdrv-no-such-tool"), "{err}");
    }

    #[test]
    fn failure_carries_stderr() {
        let err = run("sh", ["-c", "echo boom >&2; exit 3"], "test").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("boom") && msg.contains("sh -c"), "{msg}");
    }

    #[test]
    fn multi_line_output_is_folded_into_one_line() {
        let err = run("sh", ["-c", "printf 'a\\n\\nb\\n' >&2; exit 1"], "test").unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('\n') && msg.contains("a; b"), "{msg}");
    }
}
