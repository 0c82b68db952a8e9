//! `blkdrv completion` and `blkdrv manpages`: what the packages ship, generated from the whole
//! command line (the drivers' `pool init` flags included). They read no state: no pool needed.

use kit::cli::run_cli;
use std::ffi::OsString;
use std::path::Path;

fn run(args: &[&str]) -> kit::cli::Out {
    let mut full = vec![OsString::from("blkdrv")];
    full.extend(args.iter().map(OsString::from));
    run_cli(full)
}

#[test]
fn completions_cover_the_whole_command_line() {
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&["completion", shell]);
        assert_eq!(o.code, 0, "{shell}: {}", o.stderr);
        assert!(o.stderr.is_empty(), "{shell}: {}", o.stderr);
        for word in ["storage-setup", "activate", "snapshotter", "volume"] {
            assert!(o.stdout.contains(word), "{shell} completes '{word}'");
        }
        // A driver's flag, added at run time by args::command(): not in Cli::command().
        assert!(
            o.stdout.contains("thinpool"),
            "{shell} completes --thinpool"
        );
    }
    // bash checks the syntax of its script without running it.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("blkdrv.bash");
    std::fs::write(&script, run(&["completion", "bash"]).stdout).unwrap();
    let st = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(st.success(), "bash -n on the completion script");
}

#[test]
fn completion_refuses_an_unknown_shell() {
    let o = run(&["completion", "tcsh"]);
    assert_eq!(o.code, 2);
    assert!(o.stdout.is_empty());
    assert!(o.stderr.contains("tcsh"), "{}", o.stderr);
}

fn page(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn manpages_one_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man8");
    let o = run(&["manpages", out.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for want in [
        "blkdrv.8",
        "blkdrv-pool.8",
        "blkdrv-pool-init.8",
        "blkdrv-pool-activate.8",
        "blkdrv-layer-create.8",
        "blkdrv-storage-setup.8",
        "blkdrv-snapshotter-serve.8",
        "blkdrv-completion.8",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    // Hidden commands and clap's `help` get no page.
    for unwanted in ["blkdrv-manpages.8", "blkdrv-help.8", "blkdrv-pool-help.8"] {
        assert!(
            !names.iter().any(|n| n == unwanted),
            "{unwanted} in {names:?}"
        );
    }
    for n in &names {
        let text = page(&out, n);
        let title = n.trim_end_matches(".8");
        assert!(
            text.contains(&format!(".TH {title} 8")),
            "{n}: its title and section 8: {}",
            &text[..text.len().min(200)]
        );
    }
    let init = page(&out, "blkdrv-pool-init.8");
    assert!(
        init.contains("thinpool"),
        "the drivers' flags are in pool init's page"
    );
    assert!(
        page(&out, "blkdrv.8").contains("storage\\-setup"),
        "blkdrv(8) lists the commands"
    );
}

#[test]
fn manpages_into_a_file_fails_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    let o = run(&["manpages", file.join("man8").to_str().unwrap()]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert!(
        o.stderr.starts_with("blkdrv: error: manpages:"),
        "{}",
        o.stderr
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}
