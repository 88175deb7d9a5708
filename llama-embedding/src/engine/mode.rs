//! The engine's modes and the numbers llama.cpp's limits impose on a batch: sequence ids,
//! token alignment, the flash-attention tile. Pure (no FFI).

/// Most texts per batch. llama.cpp's compile-time cap on sequences per context
/// (`LLAMA_MAX_SEQ`) is 256; some ids are reserved for padding sequences.
pub const LLAMA_MAX_SEQ: usize = 248;
pub(crate) const LLAMA_SEQ_IDS: usize = 256;

/// Alignment of the [`EngineMode::Aligned`] mode: every sequence starts at a multiple of this
/// many tokens (padding in between). Without flash attention, ggml sums attention and pooling
/// over a batch's token positions in SIMD lanes, so a text's position in the batch changes its
/// rounding (measured: up to 3e-4 per component on all-MiniLM-L6-v2 f16); aligned starts give
/// each text the same lanes in any batch.
pub const TOKEN_ALIGN: usize = 8;

/// Tokens of one flash-attention query tile in ggml's CPU backend (`GGML_FA_TILE_Q`): a decode
/// with fewer tokens runs the per-row kernel, which visits each query's unmasked keys one by one
/// in order, so a text's attention is the same whatever else is in the decode. From this many
/// tokens on, ggml switches to a tiled kernel whose tiles span texts.
pub const FLASH_TILE: usize = 64;

/// How a context turns a batch into vectors; each is recorded with a run, since they round
/// differently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineMode {
    /// The default: flash attention, no padding; several texts share a decode only while it has
    /// fewer than [`FLASH_TILE`] tokens (a longer text gets a decode of its own), and the
    /// pooling is done here from the token rows, in order. Every text's vector is bit-identical
    /// in any batch, long texts included (`tests/engine.rs`).
    #[default]
    Exact,
    /// No flash attention, each text padded to a multiple of the alignment, llama.cpp pools
    /// (the default before the exact mode; runs made with it resume with it). Bit-identical in
    /// any batch at alignment 16 and, but for rare long texts, at 8.
    Aligned,
    /// Flash attention, any decode size, llama.cpp pools: a text's vector varies with its
    /// batch in the last bits (up to ~3e-4 per component).
    Fast,
}

impl EngineMode {
    pub fn flash_attention(self) -> bool {
        self != EngineMode::Aligned
    }

    /// Most tokens several texts may share a decode with; `None`: the token budget decides.
    pub fn shared_decode_cap(self) -> Option<usize> {
        (self == EngineMode::Exact).then_some(FLASH_TILE - 1)
    }
}

impl std::fmt::Display for EngineMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineMode::Exact => "exact",
            EngineMode::Aligned => "aligned",
            EngineMode::Fast => "fast",
        })
    }
}

/// Tokens a sequence takes in a batch with alignment `align`, padding included.
pub fn aligned_len_to(n: usize, align: usize) -> usize {
    n.next_multiple_of(align)
}

/// Whether `align` is an alignment the engine takes: 8, 16, 32 or 64, or 1 (none: the fast
/// mode, where vectors vary with their batch in the last bits).
pub fn valid_align(align: usize) -> bool {
    matches!(align, 1 | 8 | 16 | 32 | 64)
}

/// Tokens a context is made for: the batch rounded up to the alignment (room for padding), and a
/// multiple of `n_seq_max`, because llama.cpp's graph reservation aborts (GGML_ASSERT in
/// ggml_can_mul_mat) when `n_ubatch` is not one.
pub fn context_tokens(max_batch_tokens: usize, n_seq: usize, align: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let step = align / gcd(align, n_seq) * n_seq;
    max_batch_tokens
        .next_multiple_of(align)
        .next_multiple_of(step)
}
