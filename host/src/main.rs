use clap::Parser;

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
