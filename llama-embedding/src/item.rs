//! Items as they flow through a run: [`SourceItem`] from a reader, [`ItemOutcome`] out of the
//! processor. Every item has an `index` (0-based position in the stream the processor saw,
//! which orders output and drives checkpoints) and an [`ItemId`] (the user's id, or the item
//! number when the input has none).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ItemError;

/// A user-visible item id: the input's own (string or integer) or the 0-based item number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ItemId {
    Num(u64),
    Str(String),
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemId::Num(n) => write!(f, "{n}"),
            ItemId::Str(s) => f.write_str(s),
        }
    }
}

impl From<u64> for ItemId {
    fn from(n: u64) -> Self {
        ItemId::Num(n)
    }
}

impl From<&str> for ItemId {
    fn from(s: &str) -> Self {
        ItemId::Str(s.to_string())
    }
}

/// Where an item is in its input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Position {
    /// 1-based line number.
    pub line: u64,
    /// Byte offset of the start of the line.
    pub byte: u64,
}

/// One item read from an input.
#[derive(Debug, Clone)]
pub struct SourceItem {
    pub id: ItemId,
    /// The text to embed, or why the record gave none.
    pub text: Result<String, ItemError>,
    pub position: Option<Position>,
    /// Fields the user asked to keep (`--keep-fields`), as JSON.
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl SourceItem {
    pub fn new(id: impl Into<ItemId>, text: impl Into<String>) -> Self {
        SourceItem {
            id: id.into(),
            text: Ok(text.into()),
            position: None,
            extra: None,
        }
    }
}

/// A successfully embedded item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResult {
    pub index: u64,
    pub id: ItemId,
    pub embedding: Vec<f32>,
    /// Tokens embedded (after truncation, special tokens included).
    pub n_tokens: usize,
    pub truncated: bool,
    /// Characters in the text (prefix excluded).
    pub n_chars: usize,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
    /// The text embedded (prefix excluded), when [`crate::BatchConfig::keep_text`] is set.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub text: Option<String>,
    /// Where this chunk lies in its item, in a chunked run (`--chunk-tokens`); `None` for a
    /// whole item. Then `id` is `"<item id>#<chunk>"`.
    #[serde(flatten, skip_serializing_if = "Option::is_none", default)]
    pub chunk: Option<Chunk>,
    /// The content key (`key.rs`), when the run makes them
    /// ([`crate::BatchConfig::key_settings`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
}

impl EmbeddingResult {
    /// The item's own id: the parent's for a chunk.
    pub fn item_id(&self) -> &ItemId {
        self.chunk.as_ref().map_or(&self.id, |c| &c.parent_id)
    }

    /// Whether this row completes its item (a whole item, or its last chunk).
    pub fn ends_item(&self) -> bool {
        self.chunk
            .as_ref()
            .is_none_or(|c| c.chunk + 1 == c.n_chunks)
    }
}

/// A chunk's place in its item: `text[byte_start..byte_end]` of the item's text is exactly the
/// text embedded (the prefix excluded), and `char_start..char_end` is the same span in
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub parent_id: ItemId,
    /// 0-based.
    pub chunk: u32,
    pub n_chunks: u32,
    pub byte_start: usize,
    pub byte_end: usize,
    pub char_start: usize,
    pub char_end: usize,
}

impl Chunk {
    /// The id of the chunk's row: `"<item id>#<chunk>"`.
    pub fn row_id(&self) -> ItemId {
        ItemId::Str(format!("{}#{}", self.parent_id, self.chunk))
    }

    /// "chunk 3 of 7 (bytes 1200..1630)", for error messages.
    pub fn describe(&self) -> String {
        format!(
            "chunk {} of {} (bytes {}..{})",
            self.chunk, self.n_chunks, self.byte_start, self.byte_end
        )
    }
}

/// An item that could not be embedded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemFailure {
    pub index: u64,
    pub id: ItemId,
    pub error: ItemError,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub position: Option<Position>,
}

/// What became of one item.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemOutcome {
    Embedded(EmbeddingResult),
    Failed(ItemFailure),
}

impl ItemOutcome {
    pub fn index(&self) -> u64 {
        match self {
            ItemOutcome::Embedded(r) => r.index,
            ItemOutcome::Failed(f) => f.index,
        }
    }

    /// The row's id (a chunk's own id in a chunked run).
    pub fn id(&self) -> &ItemId {
        match self {
            ItemOutcome::Embedded(r) => &r.id,
            ItemOutcome::Failed(f) => &f.id,
        }
    }

    /// The item's id (the parent's for a chunk).
    pub fn item_id(&self) -> &ItemId {
        match self {
            ItemOutcome::Embedded(r) => r.item_id(),
            ItemOutcome::Failed(f) => &f.id,
        }
    }

    /// Whether this outcome completes its item (a failure is always its item's only outcome).
    pub fn ends_item(&self) -> bool {
        match self {
            ItemOutcome::Embedded(r) => r.ends_item(),
            ItemOutcome::Failed(_) => true,
        }
    }

    pub fn embedded(&self) -> Option<&EmbeddingResult> {
        match self {
            ItemOutcome::Embedded(r) => Some(r),
            ItemOutcome::Failed(_) => None,
        }
    }

    pub fn into_embedded(self) -> Option<EmbeddingResult> {
        match self {
            ItemOutcome::Embedded(r) => Some(r),
            ItemOutcome::Failed(_) => None,
        }
    }

    pub fn failed(&self) -> Option<&ItemFailure> {
        match self {
            ItemOutcome::Failed(f) => Some(f),
            ItemOutcome::Embedded(_) => None,
        }
    }
}
