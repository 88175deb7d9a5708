//! The kernel probe turns a crashing CPU kernel variant into a fallback, never a dead process.
//! Two FAKE variant libraries (named as fakes: `libggml-cpu-fake-segv.so`, `-fake-sigill.so`),
//! compiled here from a few lines of C, score higher than every real variant; one hands ggml a
//! bad pointer (SIGSEGV in ggml's loader), the other executes an illegal instruction (SIGILL),
//! as the AMX kernels did on some machines. The real variants sit beside them. The chooser must
//! refuse both fakes with the signal named, run the best real variant, and embed correctly.
//! (One test per binary: the kernels are chosen once per process.)

mod common;

use std::path::Path;
use std::process::Command;

use llama_embedding::{kernels, BatchConfig, BatchProcessor};

const FAKE_SEGV: &str = r#"
int ggml_backend_score(void) { return 1 << 20; }
void *ggml_backend_init(void) { return (void *)16; } /* ggml reads through it: SIGSEGV */
"#;
const FAKE_SIGILL: &str = r#"
int ggml_backend_score(void) { return 1 << 21; }
void *ggml_backend_init(void) { __builtin_trap(); return 0; } /* ud2: SIGILL */
"#;

fn compile(source: &str, out: &Path) -> bool {
    let c = out.with_extension("c");
    std::fs::write(&c, source).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    match Command::new(&cc)
        .args(["-shared", "-fPIC", "-O0", "-o"])
        .arg(out)
        .arg(&c)
        .status()
    {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("SKIPPED kernel probe test: no C compiler ({cc}: {e})");
            false
        }
    }
}

#[test]
fn crashing_variants_are_refused_and_the_best_real_one_runs() {
    let dir = common::temp_dir("kernel-probe");
    let backends = dir.join("backends");
    std::fs::create_dir_all(&backends).unwrap();
    let real_dir = kernels::backends_dir().expect("the real variant libraries");
    let real = kernels::variants(&real_dir).unwrap();
    for v in &real {
        std::os::unix::fs::symlink(&v.path, backends.join(v.path.file_name().unwrap())).unwrap();
    }
    if !compile(FAKE_SEGV, &backends.join("libggml-cpu-fake-segv.so"))
        || !compile(FAKE_SIGILL, &backends.join("libggml-cpu-fake-sigill.so"))
    {
        assert!(std::env::var_os("CI").is_none(), "CI has a C compiler");
        return;
    }
    std::env::set_var("LLAMA_EMBED_BACKENDS_DIR", &backends);
    std::env::set_var("LLAMA_EMBED_CACHE", dir.join("cache")); // fresh verdicts
    std::env::remove_var("LLAMA_EMBED_CPU_VARIANT");

    let listed = kernels::variants(&backends).unwrap();
    assert_eq!(
        (listed[0].name.as_str(), listed[1].name.as_str()),
        ("fake-sigill", "fake-segv"),
        "the fakes rank first"
    );
    let chosen = kernels::kernels().expect("a real variant is chosen");
    // The best real variant that passed the probe: on some machines a real one crashes too
    // (ggml's AMX kernels on a Sapphire Rapids KVM guest: specification/kernels.md), and it
    // must then be refused with its signal, like the fakes.
    let refused = |name: &str| chosen.refused.iter().any(|r| r.variant == name);
    let best_real = real
        .iter()
        .find(|v| v.score > 0 && !refused(&v.name))
        .unwrap();
    assert_eq!(chosen.variant, best_real.name, "{chosen:?}");
    for v in real.iter().take_while(|v| v.name != best_real.name) {
        if v.score > 0 {
            let r = chosen.refused.iter().find(|r| r.variant == v.name).unwrap();
            assert!(!r.reason.is_empty(), "{}: refused with no reason", v.name);
        }
    }
    let why = |name: &str| {
        chosen
            .refused
            .iter()
            .find(|r| r.variant == name)
            .map(|r| r.reason.clone())
            .unwrap_or_else(|| panic!("{name} not refused: {chosen:?}"))
    };
    assert!(why("fake-segv").contains("SIGSEGV"), "{}", why("fake-segv"));
    assert!(
        why("fake-sigill").contains("SIGILL"),
        "{}",
        why("fake-sigill")
    );

    // The verdicts are cached: a second look (as the next process would) does not probe again.
    let cached = std::fs::read_dir(dir.join("cache/kernels"))
        .unwrap()
        .count();
    assert!(cached >= 3, "verdict files: {cached}");

    // And this process embeds with the chosen kernels.
    let model = common::tiny_model();
    let mut p = BatchProcessor::new(model, BatchConfig::default().with_workers(1)).unwrap();
    let out = p.process_texts(vec!["the quick brown fox".into()]).unwrap();
    let v = &out[0].embedded().expect("embedded").embedding;
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
}
