use clap::Parser;

use ksense::app::{self, EXIT_USAGE};
use ksense::config::{Cli, Command, Config};

fn main() {
    let cli = Cli::parse(); // usage errors exit 2 with clap's message
    let cfg = match Config::load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ksense: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    ksense::logging::init(cfg.log_level, cfg.log_format);
    if cfg.command == Command::Serve {
        if let Err(e) = ksense::probes::kernel::privileges() {
            eprintln!("ksense: {e}");
            std::process::exit(EXIT_USAGE);
        }
    }
    std::process::exit(app::run(cfg));
}
