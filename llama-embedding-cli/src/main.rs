//! `llama-embed`: parses the command line and hands over to the library. Exit codes (stable,
//! for scripts): 0 done; 1 error; 2 bad usage; 3 finished but some items failed; 4 stopped by
//! the error strategy; 130 interrupted by a signal (after a final checkpoint).

mod args;
mod bench;
mod bench_models;
mod bench_row;
mod chart;
mod commands;
mod common;
mod dispatch;
mod exit;
mod kernels_cmd;
mod progress;
mod runs;
mod serve_cmd;
mod sync_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A closed pipe (`llama-embed ... | head`) ends us quietly, as it ends other tools.
    #[cfg(unix)]
    unsafe {
        libc_sigpipe_default();
    }
    let cli = args::Cli::parse();
    match dispatch::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => match e.downcast_ref::<common::Usage>() {
            Some(u) => {
                eprintln!("llama-embed: {u}");
                ExitCode::from(exit::EXIT_USAGE)
            }
            None => {
                eprintln!("llama-embed: error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

#[cfg(unix)]
unsafe fn libc_sigpipe_default() {
    extern "C" {
        fn signal(sig: i32, handler: usize) -> usize;
    }
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}
