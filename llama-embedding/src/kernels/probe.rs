//! The kernel probe: runs one CPU variant on small random models of every weight type the
//! project offers, in a forked child process, so that a kernel that crashes (SIGSEGV, SIGILL,
//! a GGML_ASSERT abort) or hangs takes down the child, never the caller. The child sends back
//! its vectors through a pipe; [`super`] compares them with the baseline variant's.
//!
//! The fork happens before this process has loaded any CPU backend or run any ggml code (the
//! choice is made once, at the first model load), so the child starts from a clean llama.cpp.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::error::{Error, Result};
use crate::import::ImportType;
use crate::tiny_bert::{self, Shape};

/// Bumped whenever the probe's models or batches change (cached verdicts are keyed by it).
pub(crate) const PROBE_VERSION: u32 = 2;
/// A child that has not answered by then is killed and its variant refused.
const TIMEOUT: Duration = Duration::from_secs(180);

/// What one child run gave.
pub(crate) enum Outcome {
    /// Every vector, in probe order.
    Vectors(Vec<Vec<f32>>),
    /// The child died or failed: why, in words ("killed by SIGSEGV").
    Failed(String),
}

/// The probe models, one GGUF per weight type, written once into `dir`.
///
/// # Errors
/// I/O errors writing them.
pub(crate) fn models(dir: &Path) -> Result<Vec<(ImportType, PathBuf)>> {
    let done = dir.join(format!("v{PROBE_VERSION}"));
    let files: Vec<(ImportType, PathBuf)> = ImportType::ALL
        .into_iter()
        .map(|ty| (ty, done.join(format!("probe-{ty}.gguf"))))
        .collect();
    if files.iter().all(|(_, p)| p.is_file()) {
        return Ok(files);
    }
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for ty in ImportType::ALL {
        tiny_bert::write(&tmp, &Shape::MINILM_LAYER, ty, &format!("probe-{ty}.gguf"))?;
    }
    if std::fs::rename(&tmp, &done).is_err() {
        let _ = std::fs::remove_dir_all(&tmp); // another process wrote them first
    }
    Ok(files)
}

/// How the engine runs a decode (its three modes): the probe covers each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Flash attention, token rows out (pooled by the caller), shared decodes below 64 tokens.
    Exact,
    /// Flash attention, llama.cpp's mean pooling, decodes of any size.
    Fast,
    /// No flash attention, llama.cpp's mean pooling.
    Aligned,
}

const MODES: [Mode; 3] = [Mode::Exact, Mode::Fast, Mode::Aligned];
/// Tokens of the probe's context (the probe models have 512 positions).
const N_CTX: u32 = 512;

/// The decodes the probe runs per mode: shared decodes below and above the flash-attention
/// tile (64 tokens), a text alone at the tile, long texts up to the model's 512 positions.
fn batches(mode: Mode) -> Vec<Vec<usize>> {
    match mode {
        Mode::Exact => vec![vec![5, 20, 38], vec![64], vec![200], vec![512]],
        Mode::Fast => vec![vec![5, 20, 38, 64, 200], vec![3; 40], vec![512]],
        Mode::Aligned => vec![vec![8, 24, 40], vec![136, 72]],
    }
}

/// `[CLS] w … w [SEP]` of `len` tokens, the words cycling through the vocabulary.
fn sequence(len: usize, seed: usize, n_vocab: usize) -> Vec<LlamaToken> {
    let (cls, sep, first_word) = (2, 3, 5);
    let span = n_vocab - first_word;
    let mut s = vec![LlamaToken(cls)];
    s.extend(
        (0..len.saturating_sub(2)).map(|i| LlamaToken((first_word + (i * 7 + seed) % span) as i32)),
    );
    s.push(LlamaToken(sep));
    s
}

/// The child's work: load the variant, then embed the probe batches with every model and mode
/// through llama.cpp directly (the same kernels the engine runs).
fn child_main(variant: &Path, models: &[(ImportType, PathBuf)]) -> Result<Vec<Vec<f32>>> {
    super::load_library(variant)?;
    let mut backend = LlamaBackend::init().map_err(|e| Error::Kernels(e.to_string()))?;
    backend.void_logs();
    let mut out = Vec::new();
    for (_, path) in models {
        let model = LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default())
            .map_err(|e| Error::Kernels(format!("{}: {e}", path.display())))?;
        for mode in MODES {
            out.extend(embed_mode(&backend, &model, mode)?);
        }
    }
    Ok(out)
}

fn embed_mode(backend: &LlamaBackend, model: &LlamaModel, mode: Mode) -> Result<Vec<Vec<f32>>> {
    let fail = |e: String| Error::Kernels(format!("{mode:?} mode: {e}"));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4)) as i32;
    let params = LlamaContextParams::default()
        .with_embeddings(true)
        .with_n_ctx(std::num::NonZeroU32::new(N_CTX))
        .with_n_batch(N_CTX)
        .with_n_ubatch(N_CTX)
        .with_n_seq_max(64) // n_ubatch must be a multiple of it (llama.cpp asserts)
        .with_kv_unified(true)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_pooling_type(if mode == Mode::Exact {
            LlamaPoolingType::None
        } else {
            LlamaPoolingType::Mean
        })
        .with_flash_attention_policy(if mode == Mode::Aligned {
            llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED
        } else {
            llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED
        });
    let mut ctx = model
        .new_context(backend, params)
        .map_err(|e| fail(e.to_string()))?;
    let n_vocab = usize::try_from(model.n_vocab()).unwrap_or(0);
    let mut out = Vec::new();
    for (b, lens) in batches(mode).iter().enumerate() {
        let mut batch = LlamaBatch::new(N_CTX as usize, 1);
        for (seq, &n) in lens.iter().enumerate() {
            for (pos, tok) in sequence(n, b * 31 + seq, n_vocab).into_iter().enumerate() {
                batch
                    .add(tok, pos as i32, &[seq as i32], true)
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
        ctx.clear_kv_cache();
        ctx.decode(&mut batch).map_err(|e| fail(e.to_string()))?;
        let mut start = 0usize;
        for (seq, &n) in lens.iter().enumerate() {
            let v = if mode == Mode::Exact {
                // The first, middle and last token rows: what the engine pools from.
                let mut v = Vec::new();
                for i in [start, start + n / 2, start + n - 1] {
                    let row = ctx
                        .embeddings_ith(i as i32)
                        .map_err(|e| fail(e.to_string()))?;
                    v.extend_from_slice(row);
                }
                v
            } else {
                let row = ctx
                    .embeddings_seq_ith(seq as i32)
                    .map_err(|e| fail(e.to_string()))?;
                row.to_vec()
            };
            out.push(v);
            start += n;
        }
    }
    Ok(out)
}

/// Runs the probe of `variant` in a forked child and waits for it (at most [`TIMEOUT`]).
///
/// # Errors
/// Only when the child cannot be started (pipe or fork failed); everything the child does
/// wrong is an [`Outcome::Failed`].
pub(crate) fn run(variant: &Path, models: &[(ImportType, PathBuf)]) -> Result<Outcome> {
    let mut fds = [0; 2];
    // SAFETY: pipe() fills two descriptors, owned below.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(Error::io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are fresh and owned only here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only runs the probe and leaves with _exit, never returning into the
    // caller's stack; the parent has not started ggml (see the module comment).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::io("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(read);
        child(variant, models, write);
    }
    drop(write);
    let bytes = read_with_deadline(read, pid, Instant::now() + TIMEOUT);
    let status = wait(pid);
    Ok(judge(status, bytes))
}

/// The child: probe, send the vectors (or the error) and leave without unwinding.
fn child(variant: &Path, models: &[(ImportType, PathBuf)], write: OwnedFd) -> ! {
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child_main(variant, models)));
    let mut pipe = std::fs::File::from(write);
    let code = match result {
        Ok(Ok(vectors)) => {
            let mut buf = Vec::new();
            buf.push(b'V');
            for v in &vectors {
                buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
                buf.extend(v.iter().flat_map(|x| x.to_le_bytes()));
            }
            let _ = pipe.write_all(&buf);
            0
        }
        Ok(Err(e)) => {
            let _ = pipe.write_all(format!("E{e}").as_bytes());
            1
        }
        Err(_) => {
            let _ = pipe.write_all(b"Epanicked");
            1
        }
    };
    drop(pipe);
    // SAFETY: ends the child at once: no atexit handlers or destructors of the parent's state.
    unsafe { libc::_exit(code) }
}

/// Reads the child's answer until it closes the pipe; kills it at the deadline.
fn read_with_deadline(read: OwnedFd, pid: libc::pid_t, deadline: Instant) -> Option<Vec<u8>> {
    let mut file = std::fs::File::from(read);
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&file),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready =
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if ready == 0 {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return None;
        }
        match file.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Some(out),
        }
    }
}

fn wait(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return status;
        }
    }
}

fn signal_name(sig: libc::c_int) -> String {
    match sig {
        libc::SIGSEGV => "SIGSEGV (invalid memory access)".into(),
        libc::SIGILL => "SIGILL (illegal instruction)".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGABRT => "SIGABRT (a llama.cpp/ggml assertion)".into(),
        libc::SIGKILL => "SIGKILL".into(),
        n => format!("signal {n}"),
    }
}

/// Turns the child's exit status and answer into an outcome.
fn judge(status: libc::c_int, bytes: Option<Vec<u8>>) -> Outcome {
    let Some(bytes) = bytes else {
        return Outcome::Failed(format!("did not finish within {} s", TIMEOUT.as_secs()));
    };
    if libc::WIFSIGNALED(status) {
        return Outcome::Failed(format!(
            "crashed: killed by {}",
            signal_name(libc::WTERMSIG(status))
        ));
    }
    match bytes.split_first() {
        Some((b'V', mut rest)) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => {
            let mut vectors = Vec::new();
            while rest.len() >= 4 {
                let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let Some(body) = rest.get(4..4 + 4 * n) else {
                    return Outcome::Failed("sent a truncated answer".into());
                };
                vectors.push(
                    body.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                );
                rest = &rest[4 + 4 * n..];
            }
            Outcome::Vectors(vectors)
        }
        Some((b'E', msg)) => Outcome::Failed(format!("failed: {}", String::from_utf8_lossy(msg))),
        _ => Outcome::Failed(format!("exited with status {status} and no answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sequences_fit_the_probe_context() {
        for mode in MODES {
            for b in batches(mode) {
                assert!(b.len() <= 64);
                let total: usize = b.iter().sum();
                assert!(total <= N_CTX as usize, "{mode:?}: {b:?}");
                if mode == Mode::Exact && b.len() > 1 {
                    assert!(
                        total < 64,
                        "the exact mode shares decodes below the tile only"
                    );
                }
                if mode == Mode::Aligned {
                    assert!(
                        b.iter().all(|n| n % 8 == 0),
                        "aligned texts are multiples of 8"
                    );
                }
            }
        }
        let s = sequence(5, 0, 300);
        assert_eq!(s.len(), 5);
        assert_eq!((s[0], s[4]), (LlamaToken(2), LlamaToken(3)));
    }

    #[test]
    fn a_crash_is_reported_by_signal_and_garbage_is_not_vectors() {
        // Status as waitpid reports a child killed by SIGSEGV (termination signal in the low bits).
        match judge(libc::SIGSEGV, Some(Vec::new())) {
            Outcome::Failed(why) => assert!(why.contains("SIGSEGV"), "{why}"),
            Outcome::Vectors(_) => panic!("a crash is not a result"),
        }
        match judge(0, Some(b"V\x02\x00\x00\x00\x00\x00".to_vec())) {
            Outcome::Failed(why) => assert!(why.contains("truncated"), "{why}"),
            Outcome::Vectors(_) => panic!("truncated answer accepted"),
        }
        match judge(0, None) {
            Outcome::Failed(why) => assert!(why.contains("did not finish")),
            Outcome::Vectors(_) => panic!(),
        }
    }
}
