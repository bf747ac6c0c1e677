use clap::Parser;

/// mimalloc rather than glibc's allocator: 1.1–1.4× the reads, lists and screen pops per second
/// under 8 clients (docs/BENCHMARKS.md, session 16). SQLite allocates from it too
/// (`store::sqlite_malloc`), and it leaves transparent huge pages off (feature `no_thp`): with
/// them, each thread's first touch of an arena made 2 MiB resident (session 19).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = rapport::cli::Cli::parse();
    rapport::cli::init_tracing(cli.global.log_format);
    match rapport::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
