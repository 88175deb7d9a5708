//! [`EmbeddingModel`]: a GGUF embedding model loaded once and shared (`Arc`) by every engine
//! thread; its facts (dimensions, pooling, context, architecture, causality, sha256); and
//! tokenisation with sentence-transformers' truncation (special tokens kept).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ItemError, ItemErrorKind, Result};
use crate::gguf::{GgufFile, Value};
use crate::presets::{Preset, Role};

static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();

/// llama.cpp's backend is process-global and may be initialised once: after the CPU kernels
/// are chosen and loaded ([`crate::kernels`]).
///
/// # Errors
/// [`Error::Kernels`] when no CPU kernel variant can run here.
pub(crate) fn backend() -> Result<&'static LlamaBackend> {
    BACKEND
        .get_or_init(|| {
            crate::kernels::kernels().map_err(|e| e.to_string())?;
            Ok(new_backend())
        })
        .as_ref()
        .map_err(|e| Error::Kernels(e.clone()))
}

fn new_backend() -> LlamaBackend {
    let mut b = LlamaBackend::init().expect("llama backend initialised twice");
    if std::env::var_os("LLAMA_EMBED_LLAMA_LOG").is_none() {
        b.void_logs();
    }
    b
}

/// How token vectors become one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// What the GGUF says (`{arch}.pooling_type`).
    #[default]
    Model,
    Mean,
    Cls,
    Last,
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooling::Model => "model",
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        })
    }
}

impl std::str::FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "model" | "default" => Ok(Pooling::Model),
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "last" => Ok(Pooling::Last),
            _ => Err(format!(
                "unknown pooling {s:?} (expected model, mean, cls or last)"
            )),
        }
    }
}

/// Post-processing of the pooled vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    #[default]
    L2,
    None,
}

impl std::str::FromStr for Normalize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "l2" => Ok(Normalize::L2),
            "none" => Ok(Normalize::None),
            _ => Err(format!("unknown normalisation {s:?} (expected l2 or none)")),
        }
    }
}

/// Settings that change the vectors (and so are recorded with every run and checked on resume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EmbedOptions {
    pub pooling: Pooling,
    pub normalize: Normalize,
    /// Tokens per text including special tokens; `None`: the model's training context.
    pub max_tokens: Option<usize>,
    /// Truncate longer texts (true) or reject them as [`ItemErrorKind::TooLong`] (false).
    pub truncate: bool,
    /// Prepended to every text, e.g. `"query: "` (a named prompt's text, when `prompt` is set).
    pub prefix: Option<String>,
    /// The model's named prompt that `prefix` holds (`--prompt NAME`, or the default for the
    /// command); `Some("none")` when the user asked for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Matryoshka truncation: keep the first N dimensions, then normalise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            pooling: Pooling::Model,
            normalize: Normalize::L2,
            max_tokens: None,
            truncate: true,
            prefix: None,
            prompt: None,
            dimensions: None,
        }
    }
}

impl EmbedOptions {
    /// What goes before each text, for a run's summary: `document ("title: none | text: ")`,
    /// `--prefix "query: "`, or `none`.
    pub fn prompt_summary(&self) -> String {
        match (self.prompt.as_deref(), self.prefix.as_deref()) {
            (Some(name), Some(text)) => format!("{name} ({text:?})"),
            (Some("none"), None) => "none (--prompt none)".into(),
            (_, Some(text)) => format!("--prefix {text:?}"),
            (_, None) => "none".into(),
        }
    }

    pub fn with_pooling(mut self, p: Pooling) -> Self {
        self.pooling = p;
        self
    }
    pub fn with_normalize(mut self, n: Normalize) -> Self {
        self.normalize = n;
        self
    }
    pub fn with_max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = Some(n);
        self
    }
    pub fn with_truncate(mut self, t: bool) -> Self {
        self.truncate = t;
        self
    }
    pub fn with_prefix(mut self, p: impl Into<String>) -> Self {
        self.prefix = Some(p.into());
        self
    }
    /// A named prompt of the model (`"none"` for none), resolved by
    /// [`EmbeddingModel::resolve_options`].
    pub fn with_prompt(mut self, name: impl Into<String>) -> Self {
        self.prompt = Some(name.into());
        self
    }
    pub fn with_dimensions(mut self, n: usize) -> Self {
        self.dimensions = Some(n);
        self
    }
    /// The length of the vectors these options give with a model of `full` dimensions.
    pub fn output_dimensions(&self, full: usize) -> usize {
        self.dimensions.map_or(full, |d| d.min(full))
    }
}

/// Options for loading a model.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Layers to offload to a GPU; `None`: all when a GPU backend is compiled in.
    pub gpu_layers: Option<u32>,
}

impl LoadOptions {
    pub fn with_gpu_layers(mut self, n: Option<u32>) -> Self {
        self.gpu_layers = n;
        self
    }
}

/// What a model is, read from its GGUF and from llama.cpp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFacts {
    pub name: Option<String>,
    pub architecture: String,
    /// Length of the output vectors.
    pub dimensions: usize,
    /// The model's own pooling (`None` when the GGUF names none).
    pub pooling: Option<Pooling>,
    /// Context length the model was trained with (positions it has embeddings for).
    pub n_ctx_train: usize,
    pub causal: bool,
    pub n_vocab: usize,
    pub n_params: u64,
    pub file_size: u64,
}

/// Architectures that llama.cpp runs with non-causal attention.
const NON_CAUSAL: &[&str] = &[
    "bert",
    "nomic-bert",
    "nomic-bert-moe",
    "jina-bert-v2",
    "jina-bert-v3",
    "t5encoder",
    "modern-bert",
    "neo-bert",
    "eurobert",
];

/// Architectures whose llama.cpp loader sets non-causal attention itself, whatever
/// `<arch>.attention.causal` says (`hparams.causal_attn = false` in their `load_arch_hparams`).
const FORCED_NON_CAUSAL: &[&str] = &["gemma-embedding", "dream", "llada", "llada-moe", "rnd1"];

/// Whether llama.cpp runs `architecture` with causal attention, given the GGUF's
/// `<arch>.attention.causal` (`key`): forced for some loaders, else the key, else the
/// architecture's default.
fn runs_causal(architecture: &str, key: Option<bool>) -> bool {
    if FORCED_NON_CAUSAL.contains(&architecture) {
        return false;
    }
    key.unwrap_or(!NON_CAUSAL.contains(&architecture))
}

/// A loaded GGUF embedding model. Share it as `Arc<EmbeddingModel>`; each engine thread makes
/// its own context from it.
pub struct EmbeddingModel {
    pub(crate) llama: LlamaModel,
    path: PathBuf,
    facts: ModelFacts,
    preset: Preset,
    sha256: OnceLock<String>,
    /// Special tokens the tokenizer puts before and after every text ([CLS] / [SEP] for BERT).
    special_head: usize,
    special_tail: usize,
    /// The EOS token llama-embed appends because the family needs it and the GGUF's tokenizer
    /// does not add it (a Qwen3 GGUF converted before llama.cpp PR #14314).
    appended_eos: Option<LlamaToken>,
    /// llama.cpp's context creation mutates the model; contexts are made one at a time.
    pub(crate) context_lock: Mutex<()>,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("path", &self.path)
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
}

impl EmbeddingModel {
    /// Loads the GGUF at `path`, after checking it in Rust so that a truncated, non-GGUF or
    /// non-embedding file is an error rather than a llama.cpp abort.
    ///
    /// # Errors
    /// [`Error::ModelNotFound`], [`Error::InvalidModel`], [`Error::NotEmbeddingModel`] (only
    /// when `require_pooling`), [`Error::ModelLoad`].
    pub fn load(path: &Path, options: &LoadOptions, require_pooling: bool) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::ModelNotFound {
                path: path.to_path_buf(),
            });
        }
        let gguf = GgufFile::read(path)?;
        let architecture = gguf
            .architecture()
            .ok_or_else(|| Error::ModelLoad {
                path: path.to_path_buf(),
                reason: "no general.architecture in its metadata".into(),
            })?
            .to_string();
        let pooling = match gguf.arch_key("pooling_type").and_then(Value::as_u64) {
            Some(1) => Some(Pooling::Mean),
            Some(2) => Some(Pooling::Cls),
            Some(3) => Some(Pooling::Last),
            _ => None,
        };
        if pooling.is_none() && require_pooling {
            return Err(Error::NotEmbeddingModel {
                path: path.to_path_buf(),
                architecture,
            });
        }
        let causal = runs_causal(
            &architecture,
            gguf.arch_key("attention.causal").and_then(Value::as_bool),
        );
        let preset = Preset::of(&gguf);
        preset.check(&gguf).map_err(|reason| Error::ModelRefused {
            path: path.to_path_buf(),
            reason,
        })?;
        if gguf.get("tokenizer.ggml.tokens").is_none() {
            return Err(Error::ModelLoad {
                path: path.to_path_buf(),
                reason: "it has no tokenizer (tokenizer.ggml.tokens)".into(),
            });
        }

        let mut params = LlamaModelParams::default();
        let gpu_layers = options
            .gpu_layers
            .unwrap_or(if cfg!(feature = "cuda") { 999 } else { 0 });
        params = params.with_n_gpu_layers(gpu_layers);
        let llama = LlamaModel::load_from_file(backend()?, path, &params).map_err(|e| {
            Error::ModelLoad {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        let facts = ModelFacts {
            name: gguf
                .get("general.name")
                .and_then(Value::as_str)
                .map(str::to_string),
            architecture,
            dimensions: usize::try_from(llama.n_embd_out()).unwrap_or(0),
            pooling,
            n_ctx_train: llama.n_ctx_train() as usize,
            causal,
            n_vocab: usize::try_from(llama.n_vocab()).unwrap_or(0),
            n_params: llama.n_params(),
            file_size: gguf.file_len,
        };
        let mut model = EmbeddingModel {
            llama,
            path: path.to_path_buf(),
            facts,
            preset,
            sha256: OnceLock::new(),
            special_head: 0,
            special_tail: 0,
            appended_eos: None,
            context_lock: Mutex::new(()),
        };
        model.measure_special_tokens();
        Ok(model)
    }

    /// Counts the special tokens the tokenizer adds around a text, by comparing a tokenisation
    /// with and without them (this works for every vocabulary type llama.cpp has).
    fn measure_special_tokens(&mut self) {
        let vocab = self.llama.vocab();
        let plain = vocab.tokenize(b"a", false, false);
        let with = vocab.tokenize(b"a", true, false);
        if let Some(at) = with
            .windows(plain.len().max(1))
            .position(|w| w == plain.as_slice())
        {
            self.special_head = at;
            self.special_tail = with.len() - at - plain.len();
        }
        let eos = vocab.eos();
        if self.preset.needs_eos && eos.0 >= 0 && with.last() != Some(&eos) {
            self.appended_eos = Some(eos);
            self.special_tail += 1;
        }
    }

    /// The EOS token appended to every text by llama-embed (not by the GGUF's tokenizer), when
    /// the model's family pools on it and the tokenizer does not add it.
    pub fn appended_eos(&self) -> Option<LlamaToken> {
        self.appended_eos
    }

    /// `text` with the special tokens, as llama.cpp's tokenizer gives them, plus the EOS
    /// llama-embed appends where the family needs it.
    fn tokenize_special(&self, text: &str) -> Vec<LlamaToken> {
        let mut tokens = self.llama.vocab().tokenize(text.as_bytes(), true, true);
        if let Some(eos) = self.appended_eos {
            tokens.push(eos);
        }
        tokens
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn facts(&self) -> &ModelFacts {
        &self.facts
    }

    pub fn dimensions(&self) -> usize {
        self.facts.dimensions
    }

    /// What the model's family needs: prompts, Matryoshka sizes, required tensors.
    pub fn preset(&self) -> &Preset {
        &self.preset
    }

    /// `options` made concrete for this model and `role`: a named prompt becomes its text in
    /// `prefix`; with neither a prompt nor a prefix, the model's default prompt for `role` is
    /// applied (and named in `prompt`); `dimensions` is checked against the Matryoshka sizes
    /// the model was trained for (any size up to the full one with `force_dimensions`).
    ///
    /// # Errors
    /// [`Error::Config`]: an unknown prompt, a prompt with a prefix, a size out of range.
    pub fn resolve_options(
        &self,
        mut options: EmbedOptions,
        role: Role,
        force_dimensions: bool,
    ) -> Result<EmbedOptions> {
        match (options.prompt.as_deref(), options.prefix.is_some()) {
            (Some("none"), _) | (None, true) => {}
            // A recorded run's options: the prompt's text is already in `prefix`.
            (Some(name), true) if self.preset.prompt(name).ok() == options.prefix.as_deref() => {}
            (Some(name), true) => {
                return Err(Error::Config(format!(
                    "--prompt {name} and --prefix both set what goes before each text; give one"
                )))
            }
            (Some(name), false) => {
                let text = self.preset.prompt(name).map_err(Error::Config)?;
                options.prefix = Some(text.to_string());
            }
            (None, false) => {
                if let Some(name) = self.preset.default_prompt(role) {
                    options.prefix = Some(self.preset.prompt(name).map_err(Error::Config)?.into());
                    options.prompt = Some(name.to_string());
                }
            }
        }
        if let Some(n) = options.dimensions {
            self.check_dimensions(n, force_dimensions)?;
        }
        Ok(options)
    }

    fn check_dimensions(&self, n: usize, force: bool) -> Result<()> {
        let full = self.facts.dimensions;
        if n == 0 || n > full {
            return Err(Error::Config(format!(
                "--dimensions {n}: this model's vectors have {full} dimensions; give 1 to {full}"
            )));
        }
        let m = &self.preset.matryoshka;
        if !force && !m.allows(n, full) {
            return Err(Error::Config(format!(
                "--dimensions {n}: {} was not trained to be truncated to {n} dimensions \
                 (Matryoshka sizes: {m}); truncated vectors of other sizes lose more quality than \
                 a trained size. Pass --force-dimensions to truncate anyway",
                self.facts.name.as_deref().unwrap_or(&self.preset.family)
            )));
        }
        Ok(())
    }

    /// Number of special tokens added before and after each text.
    pub fn special_tokens(&self) -> (usize, usize) {
        (self.special_head, self.special_tail)
    }

    /// The pooling that `options` resolves to for this model.
    ///
    /// # Errors
    /// [`Error::NotEmbeddingModel`] when the options say "model default" and the model has none.
    pub fn effective_pooling(&self, options: &EmbedOptions) -> Result<Pooling> {
        match options.pooling {
            Pooling::Model => self.facts.pooling.ok_or_else(|| Error::NotEmbeddingModel {
                path: self.path.clone(),
                architecture: self.facts.architecture.clone(),
            }),
            p => Ok(p),
        }
    }

    /// Tokens per text after truncation: `options.max_tokens` or the training context.
    ///
    /// # Errors
    /// [`Error::Config`] when the limit is too small to hold the special tokens plus one, or is
    /// beyond the training context (positions the model has no embeddings for).
    pub fn max_tokens(&self, options: &EmbedOptions) -> Result<usize> {
        let n = options.max_tokens.unwrap_or(self.facts.n_ctx_train);
        let min = self.special_head + self.special_tail + 1;
        if n < min {
            return Err(Error::Config(format!(
                "max tokens {n} is too small: this model adds {} special token(s), so at least {min} are needed",
                min - 1
            )));
        }
        if n > self.facts.n_ctx_train && !self.facts.causal {
            return Err(Error::Config(format!(
                "max tokens {n} is larger than the model's training context {} (a BERT-style model has no position embeddings past it)",
                self.facts.n_ctx_train
            )));
        }
        Ok(n)
    }

    /// Tokenises one text with the special tokens, applying `options.prefix` and truncation.
    /// Truncation keeps the leading and trailing special tokens ([CLS] t1..t(N-2) [SEP] for BERT),
    /// as sentence-transformers' `max_seq_length` does.
    ///
    /// # Errors
    /// [`ItemErrorKind::Empty`], [`ItemErrorKind::Nul`] or [`ItemErrorKind::TooLong`].
    pub fn tokenize(
        &self,
        text: &str,
        options: &EmbedOptions,
        max_tokens: usize,
    ) -> Result<Tokenized, ItemError> {
        if text.trim().is_empty() {
            return Err(ItemError::new(ItemErrorKind::Empty, "the text is empty"));
        }
        if let Some(at) = text.find('\0') {
            return Err(ItemError::new(
                ItemErrorKind::Nul,
                format!("the text has a NUL byte at byte {at}"),
            ));
        }
        let owned;
        let full = match &options.prefix {
            Some(p) => {
                owned = format!("{p}{text}");
                owned.as_str()
            }
            None => text,
        };
        let tokens = self.tokenize_special(full);
        Tokenized::fit(tokens, max_tokens, self.special_tail, options.truncate)
    }

    /// Tokens that embedding adds to any text: the special tokens and the prefix (what a
    /// chunk's overlap does not count).
    pub fn added_tokens(&self, options: &EmbedOptions) -> usize {
        let (head, tail) = self.wrapping(options);
        head.len() + tail.len()
    }

    /// The engine backend's `tokenize_pieces` (late chunking): the head (`[CLS]` and prefix)
    /// and tail (`[SEP]`) are those [`EmbeddingModel::tokenize`] puts around any text.
    pub fn tokenize_pieces(
        &self,
        pieces: &[&str],
        options: &EmbedOptions,
    ) -> (Vec<LlamaToken>, Vec<std::ops::Range<usize>>) {
        let vocab = self.llama.vocab();
        let (mut tokens, tail) = self.wrapping(options);
        let mut ranges = Vec::with_capacity(pieces.len());
        for p in pieces {
            let start = tokens.len();
            tokens.extend(vocab.tokenize(p.as_bytes(), false, true));
            ranges.push(start..tokens.len());
        }
        tokens.extend(tail);
        (tokens, ranges)
    }

    /// The tokens [`EmbeddingModel::tokenize`] puts before (special tokens, prefix) and after
    /// (the closing special tokens) any text, found by tokenising a one-token probe both ways.
    fn wrapping(&self, options: &EmbedOptions) -> (Vec<LlamaToken>, Vec<LlamaToken>) {
        let vocab = self.llama.vocab();
        let probe = "a";
        let full = format!("{}{probe}", options.prefix.as_deref().unwrap_or(""));
        let mut full = self.tokenize_special(&full);
        let alone = vocab.tokenize(probe.as_bytes(), false, true).len();
        let tail = full.split_off(full.len() - self.special_tail.min(full.len()));
        full.truncate(full.len().saturating_sub(alone));
        (full, tail)
    }

    /// SHA-256 of the model file, computed once and cached next to the model
    /// (`MODEL.sha256`) or, where that folder is read-only, in the user cache.
    ///
    /// # Errors
    /// I/O errors reading the model.
    pub fn sha256(&self) -> Result<String> {
        if let Some(h) = self.sha256.get() {
            return Ok(h.clone());
        }
        let h = crate::resolve::file_sha256_cached(&self.path)?;
        Ok(self.sha256.get_or_init(|| h).clone())
    }
}

/// A tokenised text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    pub tokens: Vec<LlamaToken>,
    /// Tokens before truncation.
    pub n_tokens_full: usize,
    pub truncated: bool,
}

impl Tokenized {
    /// A text's full tokenisation cut to `max_tokens`, keeping its last `tail` tokens (the
    /// closing special tokens: `[CLS] t1..t(N-2) [SEP]` for BERT, as sentence-transformers'
    /// `max_seq_length` does).
    ///
    /// # Errors
    /// [`ItemErrorKind::TooLong`] when it is longer and `truncate` is off.
    pub fn fit(
        mut tokens: Vec<LlamaToken>,
        max_tokens: usize,
        tail: usize,
        truncate: bool,
    ) -> Result<Tokenized, ItemError> {
        let n_full = tokens.len();
        let truncated = n_full > max_tokens;
        if truncated {
            if !truncate {
                return Err(ItemError::new(
                    ItemErrorKind::TooLong,
                    format!(
                        "{n_full} tokens, more than the limit of {max_tokens} (truncation is off)"
                    ),
                ));
            }
            let tail = tail.min(n_full);
            let tail_tokens: Vec<LlamaToken> = tokens[n_full - tail..].to_vec();
            tokens.truncate(max_tokens - tail);
            tokens.extend(tail_tokens);
        }
        Ok(Tokenized {
            tokens,
            n_tokens_full: n_full,
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::runs_causal;

    #[test]
    fn causal_attention_is_what_llama_cpp_runs() {
        // The gemma-embedding loader forces bidirectional attention whatever the key says.
        assert!(!runs_causal("gemma-embedding", None));
        assert!(!runs_causal("gemma-embedding", Some(true)));
        assert!(!runs_causal("bert", None));
        assert!(runs_causal("bert", Some(true)));
        assert!(runs_causal("qwen3", None));
        assert!(!runs_causal("qwen3", Some(false)));
    }
}
