//! `blkdrv-test-child`: the CLI in a child process for the test binaries on the standard
//! harness (see `kit::child`). Not a tool: it runs only with `BLKDRV_TEST_CHILD` set.

fn main() {
    kit::child::maybe_run_child();
    eprintln!(
        "blkdrv-test-child: run by the tests with {} set",
        kit::child::ENV_CHILD
    );
    std::process::exit(2);
}
