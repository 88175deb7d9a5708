//! Replays the committed fuzz corpus (`fuzz/corpus/TARGET/*`) and the inputs fuzzing found
//! bugs with (`fuzz/regressions/TARGET/*`) through the fuzz targets' own bodies
//! (`llama_embedding::fuzzing`), plus every prefix of each file (truncated inputs), in the
//! normal test suite, without libFuzzer. `scripts/fuzz` runs the fuzzer itself.

use std::path::Path;

use llama_embedding::fuzzing::{run, TARGETS};

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn the_fuzz_corpus_and_regressions_pass_every_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = 0;
    for t in TARGETS {
        let corpus = files(&root.join("corpus").join(t));
        assert!(
            corpus.len() >= 3,
            "fuzz/corpus/{t} has {} seed files",
            corpus.len()
        );
        for f in corpus
            .iter()
            .chain(files(&root.join("regressions").join(t)).iter())
        {
            let data = std::fs::read(f).unwrap();
            // The whole file, then every truncation of it (bounded for the big ones).
            let step = (data.len() / 512).max(1);
            for end in (0..data.len()).step_by(step).chain([data.len()]) {
                let r = std::panic::catch_unwind(|| run(t, &data[..end]));
                assert!(
                    r.is_ok(),
                    "{t} panicked on {} cut at {end} bytes",
                    f.display()
                );
                inputs += 1;
            }
        }
    }
    eprintln!("{inputs} inputs replayed");
    assert!(inputs > 1000);
}
