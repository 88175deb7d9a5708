//! Makes the built binaries find llama.cpp's shared libraries and ggml's CPU kernel variants
//! by themselves (`specification/kernels.md`).
//!
//! With the `engine` feature, llama.cpp is built with ggml's dynamic backends (one shared
//! library per CPU variant, chosen at run time). This script copies those libraries into a
//! folder named for their content, `<cache>/lib/<hash>` (the user cache the library uses:
//! `LLAMA_EMBED_CACHE`, else `$XDG_CACHE_HOME/llama-embedding`, else
//! `~/.cache/llama-embedding`), so that they outlive a `cargo install`'s temporary target
//! folder, and links every binary of this package with an RPATH that looks there first, then
//! beside the binary (`$ORIGIN`, `$ORIGIN/../lib/llama-embedding`: a copied install). The
//! folder is passed on to dependent packages as `DEP_LLAMA_EMBEDDING_LIB_DIR` and to the
//! library's code as `LLAMA_EMBED_BUILT_LIB_DIR`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LLAMA_EMBED_CACHE");
    println!("cargo:rerun-if-env-changed=XDG_CACHE_HOME");
    let Ok(backends) = env::var("DEP_LLAMA_BACKENDS_DIR") else {
        return; // no engine feature: nothing to link
    };
    let backends = PathBuf::from(backends);
    let lib = backends
        .parent()
        .expect("backends dir has a parent")
        .join("lib");
    let files = shared_libraries(&[&lib, &backends]);
    let dir = cache_dir().join("lib").join(content_hash(&files));
    install(&files, &dir);
    println!(
        "cargo:rustc-env=LLAMA_EMBED_BUILT_LIB_DIR={}",
        dir.display()
    );
    println!("cargo:lib_dir={}", dir.display());
    println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags");
    println!(
        "cargo:rustc-link-arg=-Wl,-rpath,{}:$ORIGIN:$ORIGIN/../lib/llama-embedding",
        dir.display()
    );
}

fn cache_dir() -> PathBuf {
    if let Some(p) = env::var_os("LLAMA_EMBED_CACHE") {
        return p.into();
    }
    if let Some(p) = env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("llama-embedding");
    }
    let home = env::var_os("HOME").map_or_else(env::temp_dir, PathBuf::from);
    home.join(".cache").join("llama-embedding")
}

/// The `.so` files (and their versioned names) in `dirs`, sorted by name.
fn shared_libraries(dirs: &[&Path]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in dirs {
        println!("cargo:rerun-if-changed={}", dir.display());
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".so") {
                files.push(entry.path());
            }
        }
    }
    files.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    files
}

/// FNV-1a over every file's name and bytes (a build-time content address, not a security
/// measure: the folder only has to change whenever the libraries do).
fn content_hash(files: &[PathBuf]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for f in files {
        eat(f.file_name().unwrap_or_default().as_encoded_bytes());
        eat(&fs::read(f).unwrap_or_default());
    }
    format!("{h:016x}")
}

/// Copies `files` into `dir` unless a complete copy is there; the copy is made in a sibling
/// folder and renamed, so a concurrent build never sees half of it.
fn install(files: &[PathBuf], dir: &Path) {
    if dir.join(".complete").is_file() {
        return;
    }
    let _ = fs::remove_dir_all(dir); // an incomplete copy (a build killed while copying)
    let parent = dir.parent().expect("lib dir has a parent");
    fs::create_dir_all(parent).expect("create the library cache folder");
    let tmp = parent.join(format!(".tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).expect("create a temporary library folder");
    for f in files {
        let to = tmp.join(f.file_name().expect("file name"));
        // Symlinks (libllama.so -> libllama.so.0) are copied as the files they name.
        fs::copy(f, &to).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
    }
    fs::write(tmp.join(".complete"), b"").expect("mark the library copy complete");
    if fs::rename(&tmp, dir).is_err() {
        // Another build put the same content there first.
        let _ = fs::remove_dir_all(&tmp);
    }
}
