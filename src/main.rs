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
        raise_fd_limit();
    }
    std::process::exit(app::run(cfg));
}

/// Every connection is an fd: raise the soft limit to the hard one (as Go
/// programs do), so --web.max-connections is not cut short by a soft 1024.
fn raise_fd_limit() {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}
