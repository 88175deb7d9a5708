//! CPU kernels chosen at run time. llama.cpp is built with ggml's dynamic backends: one shared
//! library per x86-64 CPU variant (`libggml-cpu-haswell.so`, `-icelake`, `-sapphirerapids`, …;
//! `specification/kernels.md`). Before the first model is loaded this module
//!
//! 1. finds the variant libraries ([`backends_dir`]) and asks each for its ggml score (0: this
//!    CPU lacks an instruction set it was built with);
//! 2. refuses variants whose register state the OS has not enabled ([`cpu::os_refuses`]);
//! 3. probes the best remaining variant in a forked child on random models of every weight
//!    type (f32, f16, bf16, q8_0; [`probe`]): a crash, a hang or vectors that disagree with the
//!    baseline variant's (haswell) refuse it, and the next best is tried; verdicts are cached per CPU and
//!    library (`<cache>/kernels/`);
//! 4. loads the chosen one, once per process.
//!
//! `LLAMA_EMBED_CPU_VARIANT=NAME` (or [`request_variant`]) asks for a variant by name; a run
//! resumed on another machine asks for the variant it was made with, since vectors differ in
//! their last bits from one variant to another.

pub mod cpu;
pub(crate) mod probe;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use cpu::CpuInfo;

use crate::error::{Error, Result};
use crate::import::ImportType;

/// The instruction sets each x86-64 variant is built with (ggml/src/CMakeLists.txt,
/// `GGML_CPU_ALL_VARIANTS`), in ggml's order.
const VARIANTS: &[(&str, &[&str])] = &[
    ("x64", &[]),
    ("sse42", &["SSE42"]),
    ("sandybridge", &["SSE42", "AVX"]),
    ("ivybridge", &["SSE42", "AVX", "F16C"]),
    ("piledriver", &["SSE42", "AVX", "F16C", "FMA"]),
    ("haswell", &["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2"]),
    (
        "skylakex",
        &["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512"],
    ),
    (
        "cannonlake",
        &[
            "SSE42",
            "AVX",
            "F16C",
            "FMA",
            "AVX2",
            "BMI2",
            "AVX512",
            "AVX512_VBMI",
        ],
    ),
    (
        "cascadelake",
        &[
            "SSE42",
            "AVX",
            "F16C",
            "FMA",
            "AVX2",
            "BMI2",
            "AVX512",
            "AVX512_VNNI",
        ],
    ),
    (
        "icelake",
        &[
            "SSE42",
            "AVX",
            "F16C",
            "FMA",
            "AVX2",
            "BMI2",
            "AVX512",
            "AVX512_VBMI",
            "AVX512_VNNI",
        ],
    ),
    (
        "cooperlake",
        &[
            "SSE42",
            "AVX",
            "F16C",
            "FMA",
            "AVX2",
            "BMI2",
            "AVX512",
            "AVX512_VNNI",
            "AVX512_BF16",
        ],
    ),
    (
        "zen4",
        &[
            "SSE42",
            "AVX",
            "F16C",
            "FMA",
            "AVX2",
            "BMI2",
            "AVX512",
            "AVX512_VBMI",
            "AVX512_VNNI",
            "AVX512_BF16",
        ],
    ),
    (
        "alderlake",
        &["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX_VNNI"],
    ),
    (
        "sapphirerapids",
        &[
            "SSE42",
            "AVX",
            "F16C",
            "FMA",
            "AVX2",
            "BMI2",
            "AVX512",
            "AVX512_VBMI",
            "AVX512_VNNI",
            "AVX512_BF16",
            "AMX_TILE",
            "AMX_INT8",
        ],
    ),
];

/// One CPU variant library.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub path: PathBuf,
    /// ggml's score on this CPU (0: it lacks an instruction set the variant needs).
    pub score: u64,
}

impl Variant {
    /// The instruction sets the variant is built with.
    pub fn features(&self) -> Vec<String> {
        features_of(&self.name)
    }
}

fn features_of(name: &str) -> Vec<String> {
    VARIANTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| f.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default()
}

/// A better variant that was not used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub variant: String,
    pub reason: String,
}

/// The CPU kernels this process runs: recorded with every run (vectors differ in their last
/// bits from one variant to another) and shown by `model info`, the summary and `bench`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernels {
    /// ggml's CPU variant ("icelake", "haswell", …).
    pub variant: String,
    /// The instruction sets that variant is built with.
    pub features: Vec<String>,
    pub cpu: CpuInfo,
    /// How it was chosen: "best that passed the probe", "requested (…)".
    pub choice: String,
    /// Better variants this CPU reports but that were not used.
    pub refused: Vec<Refusal>,
    /// The library file.
    pub library: PathBuf,
}

impl Kernels {
    /// `icelake (AVX2 AVX512 AVX512_VNNI …)`, for one-line summaries.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.variant, self.features.join(" "))
    }
}

static REQUEST: Mutex<Option<String>> = Mutex::new(None);
static CHOSEN: OnceLock<std::result::Result<Kernels, String>> = OnceLock::new();

/// Asks for the variant `name` instead of the best one. Takes effect at the first model load;
/// afterwards it is an error to ask for another variant than the loaded one.
///
/// # Errors
/// [`Error::Kernels`] when another variant is already loaded.
pub fn request_variant(name: &str) -> Result<()> {
    if let Some(Ok(k)) = CHOSEN.get() {
        if k.variant != name {
            return Err(Error::Kernels(format!(
                "this process already runs the {} CPU kernels; the {name} kernels can only be \
                 chosen before the first model is loaded",
                k.variant
            )));
        }
        return Ok(());
    }
    *REQUEST.lock().unwrap_or_else(|p| p.into_inner()) = Some(name.to_string());
    Ok(())
}

/// The variant asked for ([`request_variant`] or `LLAMA_EMBED_CPU_VARIANT`), if any.
pub fn requested_variant() -> Option<String> {
    requested().map(|(n, _)| n)
}

/// The kernels in use, loading them on first call.
///
/// # Errors
/// [`Error::Kernels`] when no variant can run here (with every variant's reason).
pub fn kernels() -> Result<&'static Kernels> {
    CHOSEN
        .get_or_init(|| choose_and_load().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Kernels(e.clone()))
}

/// The kernels in use, if they are loaded already.
pub fn loaded() -> Option<&'static Kernels> {
    CHOSEN.get().and_then(|r| r.as_ref().ok())
}

fn requested() -> Option<(String, &'static str)> {
    if let Some(n) = REQUEST.lock().unwrap_or_else(|p| p.into_inner()).clone() {
        return Some((n, "requested"));
    }
    std::env::var("LLAMA_EMBED_CPU_VARIANT")
        .ok()
        .filter(|v| !v.is_empty() && v != "auto")
        .map(|n| (n, "requested by LLAMA_EMBED_CPU_VARIANT"))
}

fn choose_and_load() -> Result<Kernels> {
    let dir = backends_dir()?;
    let all = variants(&dir)?;
    let cpu = CpuInfo::detect();
    let kernels = match requested() {
        Some((name, why)) => choose_requested(&all, &name, why, &cpu)?,
        None => choose_best(&all, &cpu)?,
    };
    load_library(&kernels.library)?;
    Ok(kernels)
}

fn kernels_for(v: &Variant, cpu: &CpuInfo, choice: String, refused: Vec<Refusal>) -> Kernels {
    Kernels {
        variant: v.name.clone(),
        features: v.features(),
        cpu: cpu.clone(),
        choice,
        refused,
        library: v.path.clone(),
    }
}

fn choose_requested(all: &[Variant], name: &str, why: &str, cpu: &CpuInfo) -> Result<Kernels> {
    let names: Vec<&str> = all.iter().map(|v| v.name.as_str()).collect();
    let v = all.iter().find(|v| v.name == name).ok_or_else(|| {
        Error::Kernels(format!(
            "there is no CPU kernel variant {name:?} ({why}); the variants are {}",
            names.join(", ")
        ))
    })?;
    let cannot = |reason: String| {
        Error::Kernels(format!(
            "the {name} CPU kernels ({why}) cannot run here: {reason}"
        ))
    };
    if v.score == 0 {
        return Err(cannot(format!(
            "this CPU ({}) lacks an instruction set they use ({})",
            cpu.model,
            v.features().join(" ")
        )));
    }
    if let Some(reason) = cpu::os_refuses(&v.features()) {
        return Err(cannot(reason));
    }
    verdict(v, baseline(all).unwrap_or(v), cpu).map_err(cannot)?;
    Ok(kernels_for(v, cpu, why.to_string(), Vec::new()))
}

fn choose_best(all: &[Variant], cpu: &CpuInfo) -> Result<Kernels> {
    let runnable: Vec<&Variant> = all.iter().filter(|v| v.score > 0).collect();
    let Some(baseline) = baseline(all) else {
        return Err(Error::Kernels(format!(
            "none of the CPU kernel variants in {} runs on this CPU ({})",
            all.first()
                .map_or_else(String::new, |v| v.path.display().to_string()),
            cpu.model
        )));
    };
    let mut refused: Vec<Refusal> = Vec::new();
    for v in runnable {
        let outcome = match cpu::os_refuses(&v.features()) {
            Some(reason) => Err(reason),
            None => verdict(v, baseline, cpu),
        };
        match outcome {
            Ok(()) => {
                let choice = if refused.is_empty() {
                    "the best this CPU runs (probed)".to_string()
                } else {
                    "the best that passed the probe".to_string()
                };
                // The refusals travel in `Kernels::refused` (the run summary and `model
                // kernels` show them); the library prints nothing.
                return Ok(kernels_for(v, cpu, choice, refused));
            }
            Err(reason) => refused.push(Refusal {
                variant: v.name.clone(),
                reason,
            }),
        }
    }
    let reasons: Vec<String> = refused
        .iter()
        .map(|r| format!("{}: {}", r.variant, r.reason))
        .collect();
    Err(Error::Kernels(format!(
        "no CPU kernel variant works on this machine ({})",
        reasons.join("; ")
    )))
}

/// The variant the probe compares others with: haswell (AVX2, the 0.1 build's instruction
/// sets) where this CPU runs it, else the plainest one that runs. Another instruction-set
/// family catches a kernel that computes something else; the plain x64 kernels take about
/// 7 s for the probe on 2 cores, haswell about 1 s.
fn baseline(all: &[Variant]) -> Option<&Variant> {
    all.iter()
        .find(|v| v.name == "haswell" && v.score > 0)
        .or_else(|| all.iter().rev().find(|v| v.score > 0))
}

/// The variant libraries in `dir`, best score first.
///
/// # Errors
/// [`Error::Kernels`] when there is none.
pub fn variants(dir: &Path) -> Result<Vec<Variant>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file
            .strip_prefix("libggml-cpu-")
            .and_then(|s| s.strip_suffix(".so"))
        else {
            continue;
        };
        let score = score(&entry.path());
        out.push(Variant {
            name: name.to_string(),
            path: entry.path(),
            score,
        });
    }
    if out.is_empty() {
        return Err(Error::Kernels(format!(
            "no ggml CPU kernel libraries (libggml-cpu-*.so) in {}; set LLAMA_EMBED_BACKENDS_DIR \
             to the folder that has them",
            dir.display()
        )));
    }
    out.sort_by(|a, b| b.score.cmp(&a.score).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// ggml's own score for a variant library (`ggml_backend_score`), 0 where it cannot be read.
fn score(path: &Path) -> u64 {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return 0;
    };
    // SAFETY: dlopen/dlsym/dlclose on a ggml backend library; ggml_backend_score takes no
    // arguments and only reads CPUID (ggml's own loader calls it the same way).
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            return 0;
        }
        let sym = libc::dlsym(h, c"ggml_backend_score".as_ptr());
        let s = if sym.is_null() {
            0
        } else {
            let f: extern "C" fn() -> libc::c_int = std::mem::transmute(sym);
            f().max(0) as u64
        };
        libc::dlclose(h);
        s
    }
}

/// Loads (registers with ggml) the CPU backend library at `path`.
///
/// # Errors
/// [`Error::Kernels`] when ggml cannot load it.
pub(crate) fn load_library(path: &Path) -> Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Kernels(format!("bad library path {}", path.display())))?;
    if std::env::var_os("LLAMA_EMBED_LLAMA_LOG").is_none() {
        // ggml announces every backend it loads on stderr; llama.cpp's logs are off too.
        // SAFETY: a callback that ignores its arguments, valid for the whole process.
        unsafe { llama_cpp_sys_2::ggml_log_set(Some(quiet), std::ptr::null_mut()) };
    }
    // SAFETY: a NUL-terminated path; ggml returns null when the library does not load.
    let reg = unsafe { llama_cpp_sys_2::ggml_backend_load(c.as_ptr()) };
    if reg.is_null() {
        return Err(Error::Kernels(format!(
            "ggml could not load {}",
            path.display()
        )));
    }
    Ok(())
}

unsafe extern "C" fn quiet(
    _level: llama_cpp_sys_2::ggml_log_level,
    _text: *const std::ffi::c_char,
    _user: *mut std::ffi::c_void,
) {
}

/// Where the variant libraries are: `LLAMA_EMBED_BACKENDS_DIR`; else the folder of the
/// loaded libggml (a copied install keeps them together); else the folder the build copied
/// them to (`build.rs`); else llama-cpp-sys-2's build folder.
///
/// # Errors
/// [`Error::Kernels`] when none of them has the libraries.
pub fn backends_dir() -> Result<PathBuf> {
    let mut tried = Vec::new();
    let candidates = [
        std::env::var_os("LLAMA_EMBED_BACKENDS_DIR").map(PathBuf::from),
        loaded_ggml_dir(),
        option_env!("LLAMA_EMBED_BUILT_LIB_DIR").map(PathBuf::from),
        llama_cpp_sys_2::BACKENDS_DIR.map(PathBuf::from),
    ];
    for dir in candidates.into_iter().flatten() {
        if has_variants(&dir) {
            return Ok(dir);
        }
        tried.push(dir.display().to_string());
    }
    Err(Error::Kernels(format!(
        "cannot find ggml's CPU kernel libraries (libggml-cpu-*.so); looked in {}. Set \
         LLAMA_EMBED_BACKENDS_DIR to the folder that has them",
        tried.join(", ")
    )))
}

fn has_variants(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libggml-cpu-"))
    })
}

/// The folder of the libggml this process loaded.
fn loaded_ggml_dir() -> Option<PathBuf> {
    // SAFETY: Dl_info is plain data; zeroed is a valid value for it.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let f = llama_cpp_sys_2::ggml_backend_load as *const libc::c_void;
    // SAFETY: dladdr fills `info` for an address inside a loaded object.
    if unsafe { libc::dladdr(f, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr's file name is a NUL-terminated string owned by the loader.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.to_bytes()),
    );
    path.parent().map(Path::to_path_buf)
}

/// The probe's verdict on `v`: Ok, or why it cannot be used. Cached on disk per CPU, probe
/// version and library contents.
fn verdict(v: &Variant, baseline: &Variant, cpu: &CpuInfo) -> std::result::Result<(), String> {
    if std::env::var("LLAMA_EMBED_KERNEL_PROBE").is_ok_and(|s| s == "off") {
        return Ok(());
    }
    let dir = crate::resolve::cache_dir().join("kernels");
    let key = cache_key(v, baseline, cpu);
    let file = dir.join(format!("{}-{key}.json", v.name));
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Ok(cached) = serde_json::from_str::<Cached>(&text) {
            return cached.refused.map_or(Ok(()), Err);
        }
    }
    let result = match probe_against(v, baseline, &dir) {
        Ok(r) => r,
        Err(why) => {
            // The probe could not run at all (no fork, no probe models): nothing is known about
            // the variant, so nothing is cached, and it runs as ggml's own loader would pick it.
            eprintln!(
                "llama-embed: could not probe the {} CPU kernels ({why}); using them unprobed",
                v.name
            );
            return Ok(());
        }
    };
    let _ = std::fs::create_dir_all(&dir);
    let cached = Cached {
        variant: v.name.clone(),
        cpu: cpu.signature(),
        refused: result.clone().err(),
    };
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, serde_json::to_vec_pretty(&cached).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, &file);
    }
    result
}

#[derive(Serialize, Deserialize)]
struct Cached {
    variant: String,
    cpu: String,
    refused: Option<String>,
}

fn cache_key(v: &Variant, baseline: &Variant, cpu: &CpuInfo) -> String {
    let mut h = Sha256::new();
    h.update(probe::PROBE_VERSION.to_le_bytes());
    h.update(cpu.signature());
    for lib in [&v.path, &baseline.path] {
        h.update(crate::resolve::file_sha256_cached(lib).unwrap_or_default());
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Minimum cosine between a variant's probe vectors and the baseline's: the variants differ in
/// rounding only (measured ≥ 0.99999 on the probe models); a kernel that computes something
/// else lands far below.
const MIN_COSINE: f64 = 0.999;

/// The verdict (Ok, or why the variant is refused), or `Err` when the probe could not run.
type Verdict = std::result::Result<(), String>;

fn probe_against(
    v: &Variant,
    baseline: &Variant,
    dir: &Path,
) -> std::result::Result<Verdict, String> {
    let models = probe::models(&dir.join("models")).map_err(|e| format!("probe models: {e}"))?;
    let ours = match run_probe(v, &models)? {
        Ok(vs) => vs,
        Err(why) => return Ok(Err(why)),
    };
    if v.path == baseline.path {
        return Ok(Ok(()));
    }
    Ok(match run_probe(baseline, &models)? {
        Ok(theirs) => compare(&ours, &theirs, &models, &baseline.name),
        // Nothing to compare with: the variant's own probe passed.
        Err(_) => Ok(()),
    })
}

/// The probe's vectors or why it failed; `Err` when the child could not be started.
fn run_probe(
    v: &Variant,
    models: &[(ImportType, PathBuf)],
) -> std::result::Result<std::result::Result<Vec<Vec<f32>>, String>, String> {
    Ok(
        match probe::run(&v.path, models).map_err(|e| e.to_string())? {
            probe::Outcome::Vectors(vs) => Ok(vs),
            probe::Outcome::Failed(why) => Err(format!(
                "{why} in the kernel probe (f32, f16, bf16, q8_0 weights)"
            )),
        },
    )
}

fn compare(
    ours: &[Vec<f32>],
    theirs: &[Vec<f32>],
    models: &[(ImportType, PathBuf)],
    baseline: &str,
) -> std::result::Result<(), String> {
    if ours.len() != theirs.len() || ours.is_empty() {
        return Err(format!(
            "gave {} probe vectors where the {baseline} kernels gave {}",
            ours.len(),
            theirs.len()
        ));
    }
    let per_model = ours.len() / models.len().max(1);
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let c = crate::vectors::cosine(a, b);
        if c.is_nan() || c < MIN_COSINE {
            let ty = models
                .get(i / per_model.max(1))
                .map_or("?", |(t, _)| t.as_str());
            return Err(format!(
                "gave wrong vectors on {ty} weights (cosine {c:.4} against the {baseline} kernels)"
            ));
        }
    }
    Ok(())
}
