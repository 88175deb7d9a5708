//! Progress display: a bar with rate and ETA when stderr is a terminal, plain lines at most
//! every few seconds otherwise (CI, logs), nothing with --quiet.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use llama_embedding::job::progress_line;
use llama_embedding::{ProgressCallback, ProgressInfo};

pub fn reporter(quiet: bool, already_done: u64) -> Option<ProgressCallback> {
    if quiet {
        return None;
    }
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} items  {msg}  ETA {eta}",
            )
            .expect("template"),
        );
        Some(Box::new(move |p: &ProgressInfo| {
            if let Some(t) = p.total {
                bar.set_length(t + already_done);
            }
            bar.set_position(p.done + already_done);
            bar.set_message(format!(
                "{:.0} texts/s, {:.0} tokens/s, {} failed, {} MB",
                p.texts_per_second, p.tokens_per_second, p.failed, p.memory_mb
            ));
            if p.total.is_some_and(|t| p.done >= t) {
                bar.finish_and_clear();
            }
        }))
    } else {
        let mut last: Option<Instant> = None;
        Some(Box::new(move |p: &ProgressInfo| {
            // The first seconds' rate is mostly start-up (contexts, first batches): no line
            // before 3 s, so the first ETA is worth reading.
            if p.done == 0 || p.elapsed_seconds < 3.0 {
                return;
            }
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                last = Some(Instant::now());
                let mut p = p.clone();
                p.done += already_done;
                p.total = p.total.map(|t| t + already_done);
                eprintln!("{}", progress_line(&p));
            }
        }))
    }
}
