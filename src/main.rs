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
        ignore_handled_signals_until_served();
        if let Err(e) = ksense::probes::kernel::privileges() {
            eprintln!("ksense: {e}");
            std::process::exit(EXIT_USAGE);
        }
        raise_fd_limit();
    }
    // Serving and recalibrating own the state file: one process at a time.
    // Held until exit; the kernel releases it however the process ends.
    // Recalibrating a state file whose directory does not exist finds nothing
    // to discard: no lock, so a mistyped path leaves no directories behind.
    let no_dir = cfg.model.state_file.parent().is_some_and(|d| !d.as_os_str().is_empty() && !d.is_dir());
    let _lock = if cfg.command == Command::Check || (cfg.command == Command::Recalibrate && no_dir) {
        None
    } else {
        // A server being replaced gets a moment to exit; recalibrate, typed
        // while one runs, is told at once.
        let wait = if cfg.command == Command::Serve { ksense::model::LOCK_WAIT } else { std::time::Duration::ZERO };
        match ksense::model::lock(&cfg.model.state_file, wait) {
            Ok(Ok(l)) => Some(l),
            Ok(Err(e)) => {
                tracing::warn!(file = %cfg.model.state_file.display(), error = %e, "cannot lock the state file: another ksense with the same file would go unnoticed");
                None
            }
            // A server runs with this state file: ask it (it owns the file).
            Err(ksense::model::StateError::Locked { pid, .. }) if cfg.command == Command::Recalibrate => {
                match ksense::model::request_recalibration(&cfg.model.state_file) {
                    Ok(_) => {
                        println!(
                            "ksense (process {pid}) serves with {}: asked it to discard its baseline; it calibrates anew from its next model interval",
                            cfg.model.state_file.display()
                        );
                        std::process::exit(0);
                    }
                    Err(e) => {
                        eprintln!("ksense: {e}");
                        std::process::exit(1);
                    }
                }
            }
            Err(e) => {
                eprintln!("ksense: {e}");
                std::process::exit(EXIT_USAGE);
            }
        }
    };
    std::process::exit(app::run(cfg));
}

/// The signals the server handles (app.rs, other_signals) are ignored from
/// the start until its handlers replace this: before, their default ended a
/// start waiting for the state file's owner or loading programs (SIGHUP:
/// exit 129). SIGTERM and SIGINT keep theirs: a start may be stopped.
fn ignore_handled_signals_until_served() {
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGALRM] {
        // SAFETY: setting a signal's disposition to SIG_IGN, before any thread starts.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
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
