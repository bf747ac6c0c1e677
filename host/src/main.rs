use clap::Parser;

/// mimalloc rather than glibc's allocator: 1.1–1.4× the reads, lists and screen pops per second
/// under 8 clients, for about twice the (small) resident memory (docs/BENCHMARKS.md, session 16).
/// SQLite keeps its own allocations on the C allocator.
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
