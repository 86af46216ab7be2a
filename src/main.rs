use clap::Parser;
use latchkey::cli::Cli;
use latchkey::settings::{LogFormat, Settings};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() {
    let cli = Cli::parse();
    // .env may set RUST_LOG, so it is read before logging starts (and again by Settings).
    let _ = dotenvy::dotenv();
    // An invalid LOG_FORMAT starts text logging; Settings then refuses it with its reason.
    let format = LogFormat::parse(std::env::var("LOG_FORMAT").ok().as_deref()).unwrap_or_default();
    latchkey::logging::init(format);
    let settings = Settings::from_env();
    let result = match settings {
        Ok(settings) => cli.run(settings).await,
        Err(error) => Err(error.into()),
    };
    let code = match result {
        Ok(()) => 0,
        Err(error) => {
            log::error!("{error:#}");
            eprintln!("latchkey: {error:#}");
            1
        }
    };
    // Exit here rather than return: returning drops the runtime, which waits for every blocking
    // task, so a bcrypt still running after SHUTDOWN_TIMEOUT would hold the exit back.
    std::process::exit(code)
}
