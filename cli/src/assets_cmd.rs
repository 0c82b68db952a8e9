//! `blkdrv completion SHELL` and the hidden `blkdrv manpages DIR`: shell completions and man
//! pages generated from the clap definitions (the packages ship both). Both describe
//! [`crate::args::command`], the whole command line with the drivers' `pool init` flags, so a
//! new driver's flags reach the completions and `blkdrv-pool-init(8)` without edits here.

use blkdrv_pool::text::escape_controls;
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The program name completions register for.
const BIN: &str = "blkdrv";
/// Section 8: system administration commands (blkdrv runs as root).
const MAN_SECTION: &str = "8";

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// The shells the packages ship completions for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl CompletionShell {
    fn generator(self) -> clap_complete::Shell {
        match self {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

#[derive(Args, Debug)]
pub struct ManpagesArgs {
    /// Directory to write blkdrv.8 and blkdrv-<subcommand>.8 into (created if missing).
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    #[error("manpages: cannot create directory {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("manpages: cannot write {}: {source}", path.display())]
    WritePage {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("completion: cannot write the {shell:?} script: {source}")]
    WriteCompletion {
        shell: CompletionShell,
        source: std::io::Error,
    },
}

pub(crate) fn completion(a: &CompletionArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    // Rendered into memory first: clap_complete panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(
        a.shell.generator(),
        &mut crate::args::command(),
        BIN,
        &mut script,
    );
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => crate::EXIT_OK,
        // `blkdrv completion bash | head`: the reader has what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => crate::EXIT_OK,
        Err(source) => report(
            err,
            &AssetsError::WriteCompletion {
                shell: a.shell,
                source,
            },
        ),
    }
}

pub(crate) fn manpages(a: &ManpagesArgs, err: &mut dyn Write) -> i32 {
    match write_manpages(&a.dir) {
        Ok(_) => crate::EXIT_OK,
        Err(e) => report(err, &e),
    }
}

fn report(err: &mut dyn Write, e: &AssetsError) -> i32 {
    let _ = writeln!(err, "blkdrv: error: {}", escape_controls(&e.to_string()));
    crate::EXIT_FAILED
}

/// Writes blkdrv.8 and one page per visible subcommand at every depth (blkdrv-pool.8,
/// blkdrv-pool-init.8, ...), returns the files written, in order.
pub fn write_manpages(dir: &Path) -> Result<Vec<PathBuf>, AssetsError> {
    std::fs::create_dir_all(dir).map_err(|source| AssetsError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut cmd = crate::args::command();
    // build() gives each subcommand its display name ("blkdrv-pool-init"), which the page
    // title and file name use, and propagates global flags into the subcommands' pages.
    cmd.build();
    let mut written = Vec::new();
    write_tree(&cmd, dir, &mut written)?;
    Ok(written)
}

fn write_tree(
    cmd: &clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), AssetsError> {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string();
    let path = dir.join(format!("{name}.{MAN_SECTION}"));
    let mut page = Vec::new();
    // Every page's footer names the program and version, as blkdrv(8)'s does; a subcommand
    // has no version of its own.
    let man = clap_mangen::Man::new(cmd.clone())
        .section(MAN_SECTION)
        .source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")));
    man.render(&mut page)
        .and_then(|()| std::fs::write(&path, &page))
        .map_err(|source| AssetsError::WritePage {
            path: path.clone(),
            source,
        })?;
    written.push(path);
    // `help` is clap's own; hidden commands (this one) are not for users.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_tree(sub, dir, written)?;
    }
    Ok(())
}
