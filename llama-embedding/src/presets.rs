//! What a model family needs to give the vectors it was trained for, read from the GGUF and,
//! where the GGUF is silent, from a small built-in table keyed by architecture (sources cited in
//! `specification/models.md`): named prompts and which one is for queries and documents, the
//! Matryoshka sizes, and the tensors a family cannot do without. [`Preset::check`] refuses a
//! GGUF that would give wrong vectors silently or abort llama.cpp at load.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::gguf::{GgufFile, Value};

/// Output sizes a model was trained to be truncated to (then re-normalised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Matryoshka {
    /// Not trained for truncation.
    None,
    /// These sizes (the full size among them).
    Sizes(Vec<usize>),
    /// Any size from `min` to the full size.
    AtLeast(usize),
}

impl Matryoshka {
    /// Whether `n` of `full` dimensions is a size the model was trained for.
    pub fn allows(&self, n: usize, full: usize) -> bool {
        match self {
            Matryoshka::None => n == full,
            Matryoshka::Sizes(s) => s.contains(&n),
            Matryoshka::AtLeast(min) => (*min..=full).contains(&n),
        }
    }
}

impl std::fmt::Display for Matryoshka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Matryoshka::None => f.write_str("none (full size only)"),
            Matryoshka::Sizes(s) => {
                let s: Vec<String> = s.iter().map(usize::to_string).collect();
                f.write_str(&s.join(", "))
            }
            Matryoshka::AtLeast(min) => write!(f, "any from {min} to the full size"),
        }
    }
}

/// Where a model's prompts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSource {
    /// `sentence_transformers.prompts.*` in the GGUF (written by this project's importer).
    Gguf,
    /// The built-in table for the architecture (llama.cpp's converter stores no prompts).
    BuiltIn,
    None,
}

/// Which side of a search a text is on: it picks the default prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Document,
    Query,
}

/// A model family's needs, for one GGUF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preset {
    /// The family ("EmbeddingGemma", "BERT", ...), or the architecture when unknown.
    pub family: String,
    /// Named prompts (name → text put before the input).
    pub prompts: BTreeMap<String, String>,
    pub prompts_from: PromptSource,
    /// The prompt names for documents and for queries, where the model has them.
    pub document_prompt: Option<String>,
    pub query_prompt: Option<String>,
    pub matryoshka: Matryoshka,
    /// Tensors the family needs, with whether this GGUF has each.
    pub required_tensors: Vec<(String, bool)>,
    /// The family pools on the end-of-text token, so every text must end with it (Qwen3).
    pub needs_eos: bool,
}

/// EmbeddingGemma's prompts (`config_sentence_transformers.json` of google/embeddinggemma-300m).
const GEMMA_PROMPTS: &[(&str, &str)] = &[
    ("query", "task: search result | query: "),
    ("document", "title: none | text: "),
    ("BitextMining", "task: search result | query: "),
    ("Clustering", "task: clustering | query: "),
    ("Classification", "task: classification | query: "),
    ("InstructionRetrieval", "task: code retrieval | query: "),
    ("MultilabelClassification", "task: classification | query: "),
    ("PairClassification", "task: sentence similarity | query: "),
    ("Reranking", "task: search result | query: "),
    ("Retrieval", "task: search result | query: "),
    ("Retrieval-query", "task: search result | query: "),
    ("Retrieval-document", "title: none | text: "),
    ("STS", "task: sentence similarity | query: "),
    ("Summarization", "task: summarization | query: "),
];

/// nomic-embed-text's task prefixes (its model card).
const NOMIC_PROMPTS: &[(&str, &str)] = &[
    ("query", "search_query: "),
    ("document", "search_document: "),
    ("clustering", "clustering: "),
    ("classification", "classification: "),
];

/// Qwen3-Embedding's query instruction (its model card's retrieval example); documents take
/// none.
const QWEN3_PROMPTS: &[(&str, &str)] = &[(
    "query",
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
)];

struct Family {
    name: &'static str,
    prompts: &'static [(&'static str, &'static str)],
    matryoshka: fn(&GgufFile) -> Matryoshka,
    tensors: &'static [&'static str],
    needs_eos: bool,
}

/// The built-in table, by `general.architecture`.
fn family(architecture: &str) -> Option<Family> {
    Some(match architecture {
        "gemma-embedding" => Family {
            name: "EmbeddingGemma",
            prompts: GEMMA_PROMPTS,
            matryoshka: |_| Matryoshka::Sizes(vec![768, 512, 256, 128]),
            tensors: &["dense_2.weight", "dense_3.weight"],
            needs_eos: false,
        },
        "nomic-bert" => Family {
            name: "nomic-embed-text",
            prompts: NOMIC_PROMPTS,
            // v1.5 was trained with Matryoshka; v1 was not.
            matryoshka: |g| {
                if name_of(g).contains("v1.5") {
                    Matryoshka::Sizes(vec![768, 512, 256, 128, 64])
                } else {
                    Matryoshka::None
                }
            },
            tensors: &[],
            needs_eos: false,
        },
        "qwen3" => Family {
            name: "Qwen3-Embedding",
            prompts: QWEN3_PROMPTS,
            matryoshka: |_| Matryoshka::AtLeast(32),
            tensors: &[],
            // Last-token pooling on <|endoftext|>; GGUFs converted before llama.cpp PR #14314
            // do not append it.
            needs_eos: true,
        },
        "bert" => Family {
            name: "BERT",
            prompts: &[],
            matryoshka: |_| Matryoshka::None,
            tensors: &[],
            needs_eos: false,
        },
        _ => return None,
    })
}

fn name_of(g: &GgufFile) -> String {
    g.get("general.name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_lowercase()
}

impl Preset {
    /// The preset of a GGUF: prompts from its metadata, else the built-in table.
    pub fn of(gguf: &GgufFile) -> Preset {
        let architecture = gguf.architecture().unwrap_or_default();
        let fam = family(architecture);
        let stored: BTreeMap<String, String> = gguf
            .metadata
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("sentence_transformers.prompts.")?;
                Some((name.to_string(), v.as_str()?.to_string()))
            })
            .collect();
        let (prompts, prompts_from) = if !stored.is_empty() {
            (stored, PromptSource::Gguf)
        } else if let Some(f) = fam.as_ref().filter(|f| !f.prompts.is_empty()) {
            let p = f
                .prompts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()));
            (p.collect(), PromptSource::BuiltIn)
        } else {
            (BTreeMap::new(), PromptSource::None)
        };
        let named = |n: &str| prompts.contains_key(n).then(|| n.to_string());
        let has_tensor = |n: &str| gguf.tensors.iter().any(|t| t.name == n);
        Preset {
            family: fam
                .as_ref()
                .map_or_else(|| architecture.to_string(), |f| f.name.to_string()),
            document_prompt: named("document"),
            query_prompt: named("query"),
            prompts,
            prompts_from,
            matryoshka: fam
                .as_ref()
                .map_or(Matryoshka::None, |f| (f.matryoshka)(gguf)),
            required_tensors: fam
                .as_ref()
                .map(|f| f.tensors)
                .unwrap_or_default()
                .iter()
                .map(|n| (n.to_string(), has_tensor(n)))
                .collect(),
            needs_eos: fam.as_ref().is_some_and(|f| f.needs_eos),
        }
    }

    /// Refuses a GGUF that lacks what its family needs, or whose metadata llama.cpp's loader
    /// would abort on.
    ///
    /// # Errors
    /// The reason, for the user.
    pub fn check(&self, gguf: &GgufFile) -> Result<(), String> {
        let missing: Vec<&str> = self
            .required_tensors
            .iter()
            .filter(|(_, has)| !has)
            .map(|(n, _)| n.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "this {} GGUF lacks {}: llama.cpp would return the vector from before the Dense \
                 projections, which is not the model's output (llama.cpp#18677). Convert it again \
                 with --sentence-transformers-dense-modules, or import it with `llama-embed model \
                 import` / `model obtain embeddinggemma-300m`",
                self.family,
                missing.join(" and ")
            ));
        }
        check_dense_dims(gguf)?;
        check_attention_layers(gguf)
    }

    /// The text of prompt `name`.
    ///
    /// # Errors
    /// The names the model has, when it has no `name`.
    pub fn prompt(&self, name: &str) -> Result<&str, String> {
        self.prompts.get(name).map(String::as_str).ok_or_else(|| {
            let known: Vec<&str> = self.prompts.keys().map(String::as_str).collect();
            if known.is_empty() {
                format!("this model has no named prompts (asked for {name:?}); use --prefix TEXT")
            } else {
                format!(
                    "this model has no prompt {name:?}; it has: {}",
                    known.join(", ")
                )
            }
        })
    }

    /// The default prompt name for `role`.
    pub fn default_prompt(&self, role: Role) -> Option<&str> {
        match role {
            Role::Document => self.document_prompt.as_deref(),
            Role::Query => self.query_prompt.as_deref(),
        }
    }
}

/// The gemma-embedding loader asserts `dense_2_feat_in == n_embd` and
/// `dense_3_feat_out == n_embd` (GGML_ASSERT, which ends the process).
fn check_dense_dims(gguf: &GgufFile) -> Result<(), String> {
    if gguf.architecture() != Some("gemma-embedding") {
        return Ok(());
    }
    let key = |k: &str| gguf.arch_key(k).and_then(Value::as_u64);
    let n_embd = key("embedding_length");
    for k in ["dense_2_feat_in", "dense_3_feat_out"] {
        if let (Some(v), Some(n)) = (key(k), n_embd) {
            if v != 0 && v != n {
                return Err(format!(
                    "gemma-embedding.{k} is {v} but the embedding length is {n} (llama.cpp would \
                     abort loading it)"
                ));
            }
        }
    }
    Ok(())
}

/// The gemma-embedding graph builds both an attention mask for its full layers and one for its
/// sliding-window layers, and llama.cpp aborts (GGML_ASSERT on the unused mask's buffer) when
/// either kind has no layer: fewer layers than the pattern (default 6: five sliding, one full)
/// gives no full layer. Reproduced with a 2-layer model; refused here instead.
fn check_attention_layers(gguf: &GgufFile) -> Result<(), String> {
    if gguf.architecture() != Some("gemma-embedding") {
        return Ok(());
    }
    let Some(n_layer) = gguf.arch_key("block_count").and_then(Value::as_u64) else {
        return Ok(());
    };
    let pattern = gguf.arch_key("attention.sliding_window_pattern");
    let is_swa: Vec<bool> = match pattern {
        Some(Value::Array(a)) => a.iter().map(|v| v.as_bool().unwrap_or(false)).collect(),
        other => {
            let n = other.and_then(Value::as_u64).unwrap_or(6);
            (0..n_layer).map(|il| n == 0 || il % n < n - 1).collect()
        }
    };
    let swa = is_swa.iter().filter(|&&s| s).count();
    if swa == 0 || swa == is_swa.len() {
        return Err(format!(
            "this gemma-embedding GGUF has {n_layer} layers, {swa} of them sliding-window: \
             llama.cpp needs at least one full-attention and one sliding-window layer (it would \
             abort on the unused attention mask)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matryoshka_sizes() {
        let s = Matryoshka::Sizes(vec![768, 512, 256, 128]);
        assert!(s.allows(256, 768));
        assert!(!s.allows(300, 768));
        assert!(Matryoshka::AtLeast(32).allows(32, 1024));
        assert!(!Matryoshka::AtLeast(32).allows(16, 1024));
        assert!(!Matryoshka::AtLeast(32).allows(2048, 1024));
        assert!(Matryoshka::None.allows(384, 384));
        assert!(!Matryoshka::None.allows(128, 384));
    }
}
