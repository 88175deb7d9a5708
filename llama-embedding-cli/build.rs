//! Links this package's binaries with an RPATH to llama.cpp's shared libraries, which the
//! `llama-embedding` build script copied into the user cache (see its build.rs).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_EMBEDDING_LIB_DIR");
    if let Ok(dir) = std::env::var("DEP_LLAMA_EMBEDDING_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}:$ORIGIN:$ORIGIN/../lib/llama-embedding");
    }
}
