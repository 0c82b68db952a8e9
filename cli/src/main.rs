fn main() {
    let mut out = std::io::stdout().lock();
    // Not locked for the whole run: the snapshotter server logs from other threads, and the
    // pool's crash points write to stderr from wherever they are.
    let mut err = std::io::stderr();
    let code = blkdrv_cli::run(std::env::args_os(), &mut out, &mut err);
    std::process::exit(code);
}
