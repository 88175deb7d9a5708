//! Chunking: a text split into spans of at most N tokens of the model's own tokenizer, special
//! tokens and prefix included, preferring the strongest boundary that fits (a markdown heading
//! or a top-level code block, then a paragraph, a line, a sentence, a word; a character only
//! inside a word longer than a chunk). Pure: the token count comes from a caller's `measure`
//! (the model's tokenizer in a run, a fake in tests), so the chunker is tested without a model.
//! specification/chunking.md says how and why.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Which boundaries a text has besides words and lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChunkBy {
    /// Paragraphs (a blank line), lines, sentences (`.`, `!`, `?` before a space), words.
    #[default]
    Text,
    /// As `Text`, and a heading (`#` at the start of a line) is stronger than a paragraph.
    Markdown,
    /// A blank line before an unindented line (a top-level item) is strongest, then blank
    /// lines, lines, words; no sentences.
    Code,
}

impl ChunkBy {
    pub const NAMES: &'static [&'static str] = &["text", "markdown", "code"];

    /// # Errors
    /// A name that is none of [`ChunkBy::NAMES`].
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "text" => Ok(ChunkBy::Text),
            "markdown" | "md" => Ok(ChunkBy::Markdown),
            "code" => Ok(ChunkBy::Code),
            other => Err(format!(
                "unknown chunk boundaries `{other}` (expected one of {})",
                ChunkBy::NAMES.join(", ")
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChunkBy::Text => "text",
            ChunkBy::Markdown => "markdown",
            ChunkBy::Code => "code",
        }
    }
}

/// How texts are chunked (a vector setting: it changes which vectors a run has).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkConfig {
    /// Most tokens a chunk takes as embedded (special tokens and prefix included).
    pub max_tokens: usize,
    /// Tokens neighbouring chunks share (their text, without special tokens and prefix), at
    /// most; less where no word boundary gives exactly this many.
    pub overlap: usize,
    pub by: ChunkBy,
    /// `--doc-vector mean`: one row per item, the normalised mean of its chunks' vectors,
    /// instead of one row per chunk.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub doc_vector: bool,
    /// `--late-chunking`: each chunk's vector is pooled from its token rows of a decode of its
    /// whole window of the text (as many neighbouring chunks as fit the context), so it sees
    /// its document (arXiv 2409.04701). Bidirectional models and the exact mode only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

impl ChunkConfig {
    /// # Errors
    /// An overlap not below the chunk size, or a chunk size of 0.
    pub fn new(max_tokens: usize, overlap: usize, by: ChunkBy) -> Result<Self, String> {
        if max_tokens == 0 {
            return Err("--chunk-tokens must be at least 1".into());
        }
        if overlap >= max_tokens {
            return Err(format!(
                "--chunk-overlap {overlap} must be below --chunk-tokens {max_tokens}"
            ));
        }
        Ok(ChunkConfig {
            max_tokens,
            overlap,
            by,
            doc_vector: false,
            late: false,
        })
    }

    /// One vector per item, the mean of its chunks' (see [`ChunkConfig::doc_vector`]).
    pub fn with_doc_vector(mut self, on: bool) -> Self {
        self.doc_vector = on;
        self
    }

    /// Late chunking (see [`ChunkConfig::late`]).
    pub fn with_late(mut self, on: bool) -> Self {
        self.late = on;
        self
    }

    /// Whether the rows are chunks (not one per item).
    pub fn chunk_rows(&self) -> bool {
        !self.doc_vector
    }
}

/// Why a text cannot be chunked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// Special tokens and prefix alone take the whole chunk.
    NoRoom { added: usize, max_tokens: usize },
    /// One character at `byte` takes more tokens than a chunk has room for.
    CharTooBig { byte: usize, max_tokens: usize },
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkError::NoRoom { added, max_tokens } => write!(
                f,
                "special tokens and prefix take {added} tokens, which leaves no room in chunks of {max_tokens}"
            ),
            ChunkError::CharTooBig { byte, max_tokens } => write!(
                f,
                "the character at byte {byte} does not fit in a chunk of {max_tokens} tokens"
            ),
        }
    }
}

/// How strong the boundary after a word is. Ordered: a chunk ends at the strongest that fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Word,
    Sentence,
    Line,
    Paragraph,
    Section,
    End,
}

/// A run of non-whitespace and the boundary after it.
#[derive(Debug, Clone, Copy)]
struct Word {
    start: usize,
    end: usize,
    after: Level,
}

/// The spans of `text`'s chunks, in order: byte ranges on char boundaries, each starting and
/// ending at non-whitespace (except inside a word longer than a chunk), covering every
/// non-whitespace byte. `measure(range)` is the token count of `text[range]` as embedded
/// (special tokens and prefix included); `added` is what embedding adds to any text (those
/// special tokens and prefix), used to size overlaps. A text that fits is one chunk; a text
/// of whitespace only is one span of all of it (the run reports it as empty).
///
/// # Errors
/// [`ChunkError`] when a chunk cannot hold even one character.
#[allow(clippy::single_range_in_vec_init)] // one span, not the bytes of a range
pub fn split(
    text: &str,
    config: &ChunkConfig,
    added: usize,
    measure: &mut dyn FnMut(Range<usize>) -> usize,
) -> Result<Vec<Range<usize>>, ChunkError> {
    let words = words(text, config.by);
    let (Some(first), Some(last)) = (words.first(), words.last()) else {
        return Ok(vec![0..text.len()]);
    };
    if measure(first.start..last.end) <= config.max_tokens {
        return Ok(vec![first.start..last.end]);
    }
    if added >= config.max_tokens {
        return Err(ChunkError::NoRoom {
            added,
            max_tokens: config.max_tokens,
        });
    }
    Splitter {
        text,
        words: &words,
        config,
        added,
        measure,
        bytes_per_token: 4.0,
    }
    .run()
}

struct Splitter<'a> {
    text: &'a str,
    words: &'a [Word],
    config: &'a ChunkConfig,
    added: usize,
    measure: &'a mut dyn FnMut(Range<usize>) -> usize,
    /// Learned from the measures so far: where to look first.
    bytes_per_token: f64,
}

impl Splitter<'_> {
    fn run(mut self) -> Result<Vec<Range<usize>>, ChunkError> {
        let mut chunks: Vec<Range<usize>> = Vec::new();
        let mut start = self.words[0].start;
        loop {
            let min_end = chunks.last().map_or(start, |c| c.end);
            let chunk = match self.chunk_from(start, min_end)? {
                Some(c) => c,
                // The overlap left no room for anything new: start after the last chunk.
                None => self
                    .chunk_from(self.start_after(min_end), min_end)?
                    .expect("a chunk from a fresh start always fits a character"),
            };
            let end = chunk.end;
            chunks.push(chunk);
            if end >= self.words[self.words.len() - 1].end {
                return Ok(chunks);
            }
            start = self.next_start(chunks[chunks.len() - 1].clone());
        }
    }

    /// The tokens of `text[range]` as embedded, learning the bytes-per-token ratio.
    fn tokens(&mut self, range: Range<usize>) -> usize {
        let bytes = range.len();
        let n = (self.measure)(range);
        if n > self.added && bytes > 0 {
            let ratio = bytes as f64 / (n - self.added) as f64;
            self.bytes_per_token = 0.7 * self.bytes_per_token + 0.3 * ratio;
        }
        n
    }

    /// The next chunk from `start`, ending past `min_end`, or `None` when the first word end
    /// past `min_end` does not fit (then the caller starts afresh).
    fn chunk_from(
        &mut self,
        start: usize,
        min_end: usize,
    ) -> Result<Option<Range<usize>>, ChunkError> {
        // Word ends past min_end, as candidate ends.
        let first = self.words.partition_point(|w| w.end <= min_end.max(start));
        let max = self.config.max_tokens;
        let guess_bytes = ((max - self.added) as f64 * self.bytes_per_token) as usize;
        let guess = self.words[first..].partition_point(|w| w.end <= start + guess_bytes);
        let n = self.words.len() - first;
        let found = largest_fitting(n, guess.saturating_sub(1), &mut |i| {
            let end = self.words[first + i].end;
            self.tokens(start..end) <= max
        });
        match found {
            Some(i) => Ok(Some(start..self.best_end(first, first + i))),
            None if start < min_end => Ok(None),
            None => self.chars_from(start, self.words[first].end).map(Some),
        }
    }

    /// Of the candidate ends `words[first..=last]`, the last one of the strongest level.
    fn best_end(&self, first: usize, last: usize) -> usize {
        let mut best = last;
        for i in (first..=last).rev() {
            if self.words[i].after > self.words[best].after {
                best = i;
            }
        }
        self.words[best].end
    }

    /// A chunk inside one word too long for a chunk: as many characters as fit.
    fn chars_from(&mut self, start: usize, word_end: usize) -> Result<Range<usize>, ChunkError> {
        let ends: Vec<usize> = self.text[start..word_end]
            .char_indices()
            .map(|(i, c)| start + i + c.len_utf8())
            .collect();
        let max = self.config.max_tokens;
        let guess = ((max - self.added) as f64 * self.bytes_per_token) as usize;
        let guess = ends.partition_point(|&e| e <= start + guess);
        match largest_fitting(ends.len(), guess.saturating_sub(1), &mut |i| {
            self.tokens(start..ends[i]) <= max
        }) {
            Some(i) => Ok(start..ends[i]),
            None => Err(ChunkError::CharTooBig {
                byte: start,
                max_tokens: max,
            }),
        }
    }

    /// Where the chunk after `prev` starts: the earliest word start inside it whose text to
    /// `prev.end` is at most the overlap, or else the first start after it.
    fn next_start(&mut self, prev: Range<usize>) -> usize {
        let overlap = self.config.overlap;
        if overlap > 0 {
            let lo = self.words.partition_point(|w| w.start <= prev.start);
            let hi = self.words.partition_point(|w| w.start < prev.end);
            let n = hi.saturating_sub(lo);
            // Fits when the shared text is at most `overlap` tokens: true from some index on.
            let end = prev.end;
            let first_fitting = smallest_fitting(n, &mut |i| {
                let s = self.words[lo + i].start;
                self.tokens(s..end).saturating_sub(self.added) <= overlap
            });
            if let Some(i) = first_fitting {
                return self.words[lo + i].start;
            }
        }
        self.start_after(prev.end)
    }

    /// The first chunk start at or after byte `end`: the next word, or mid-word when `end`
    /// falls inside one.
    fn start_after(&self, end: usize) -> usize {
        let i = self.words.partition_point(|w| w.end <= end);
        let w = self.words[i];
        if w.start < end {
            end
        } else {
            w.start
        }
    }
}

/// The largest `i < n` with `fits(i)`, for `fits` true up to some index and false after it;
/// searched outward from `guess`, so a good guess costs few calls.
fn largest_fitting(n: usize, guess: usize, fits: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let guess = guess.min(n - 1);
    // (lo fits, hi does not) brackets, found by doubling steps away from the guess.
    let (mut lo, mut hi) = if fits(guess) {
        let mut lo = guess;
        let mut step = 1;
        loop {
            let probe = lo + step;
            if probe >= n {
                if lo == n - 1 || fits(n - 1) {
                    return Some(n - 1);
                }
                break (lo, n - 1);
            }
            if !fits(probe) {
                break (lo, probe);
            }
            lo = probe;
            step *= 2;
        }
    } else {
        let mut hi = guess;
        let mut step = 1;
        loop {
            if hi == 0 {
                return None;
            }
            let probe = hi.saturating_sub(step);
            if fits(probe) {
                break (probe, hi);
            }
            if probe == 0 {
                return None;
            }
            hi = probe;
            step *= 2;
        }
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// The smallest `i < n` with `fits(i)`, for `fits` false up to some index and true after it.
fn smallest_fitting(n: usize, fits: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    (lo < n).then_some(lo)
}

/// The words of `text` (runs of non-whitespace) with the boundary after each.
fn words(text: &str, by: ChunkBy) -> Vec<Word> {
    let mut out: Vec<Word> = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                out.push(Word {
                    start: s,
                    end: i,
                    after: Level::Word,
                });
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(Word {
            start: s,
            end: text.len(),
            after: Level::End,
        });
    }
    for i in 0..out.len().saturating_sub(1) {
        let gap = &text[out[i].end..out[i + 1].start];
        let word = &text[out[i].start..out[i].end];
        let next = &text[out[i + 1].start..];
        out[i].after = level(word, gap, next, by);
    }
    if let Some(last) = out.last_mut() {
        last.after = Level::End;
    }
    out
}

/// The boundary between `word` and `next`, separated by the whitespace `gap`.
fn level(word: &str, gap: &str, next: &str, by: ChunkBy) -> Level {
    let newlines = gap.matches('\n').count();
    let at_line_start = gap.ends_with('\n');
    match by {
        ChunkBy::Markdown if newlines >= 1 && at_line_start && next.starts_with('#') => {
            return Level::Section
        }
        ChunkBy::Code if newlines >= 2 && at_line_start => return Level::Section,
        _ => {}
    }
    if newlines >= 2 {
        Level::Paragraph
    } else if newlines == 1 {
        Level::Line
    } else if by != ChunkBy::Code && ends_sentence(word) {
        Level::Sentence
    } else {
        Level::Word
    }
}

fn ends_sentence(word: &str) -> bool {
    let w = word.trim_end_matches(['"', '\'', ')', ']', '”', '’']);
    w.ends_with(['.', '!', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake tokenizer: one token per word plus one per 4 bytes of a long word, and 2
    /// special tokens.
    fn fake_count(text: &str) -> usize {
        2 + text
            .split_whitespace()
            .map(|w| 1 + w.len() / 4)
            .sum::<usize>()
    }

    fn chunks(text: &str, max: usize, overlap: usize, by: ChunkBy) -> Vec<Range<usize>> {
        let cfg = ChunkConfig::new(max, overlap, by).unwrap();
        split(text, &cfg, 2, &mut |r| fake_count(&text[r])).unwrap()
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn a_text_that_fits_is_one_chunk_without_its_outer_whitespace() {
        assert_eq!(
            chunks("  one two three \n", 10, 0, ChunkBy::Text),
            vec![2..15]
        );
    }

    #[test]
    fn chunks_end_at_the_strongest_boundary_that_fits() {
        let text = "Aa bb. Cc dd ee.\n\nFf gg hh ii jj kk.";
        let got = chunks(text, 8, 0, ChunkBy::Text);
        let spans: Vec<&str> = got.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(spans, vec!["Aa bb. Cc dd ee.", "Ff gg hh ii jj kk."]);
        // Without room for the paragraph, the sentence wins over the word.
        let got = chunks(text, 5, 0, ChunkBy::Text);
        let spans: Vec<&str> = got.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(spans, vec!["Aa bb.", "Cc dd ee.", "Ff gg hh", "ii jj kk."]);
    }

    #[test]
    fn markdown_headings_and_code_blocks_are_the_strongest() {
        let md = "# A\nxx yy.\nzz\n# B\nww";
        let got = chunks(md, 7, 0, ChunkBy::Markdown);
        let spans: Vec<&str> = got.iter().map(|r| &md[r.clone()]).collect();
        assert_eq!(spans, vec!["# A\nxx yy.\nzz", "# B\nww"]);
        let code = "fn a() {\n    x\n\n    y\n}\n\nfn b() {}";
        let got = chunks(code, 9, 0, ChunkBy::Code);
        let spans: Vec<&str> = got.iter().map(|r| &code[r.clone()]).collect();
        assert_eq!(spans, vec!["fn a() {\n    x\n\n    y\n}", "fn b() {}"]);
    }

    #[test]
    fn a_word_longer_than_a_chunk_is_cut_at_characters() {
        let text = "ab ééééééééééééééééééééééééééééééé cd";
        let got = chunks(text, 4, 0, ChunkBy::Text);
        for r in &got {
            assert!(fake_count(&text[r.clone()]) <= 4, "{:?}", &text[r.clone()]);
        }
        let joined: String = got
            .iter()
            .map(|r| &text[r.clone()])
            .collect::<Vec<_>>()
            .join("");
        assert_eq!(joined.replace(' ', ""), text.replace(' ', ""));
    }

    #[test]
    fn no_room_is_an_error() {
        let cfg = ChunkConfig::new(2, 0, ChunkBy::Text).unwrap();
        let text = "a b c";
        let e = split(text, &cfg, 2, &mut |r| fake_count(&text[r])).unwrap_err();
        assert_eq!(
            e,
            ChunkError::NoRoom {
                added: 2,
                max_tokens: 2
            }
        );
        assert!(ChunkConfig::new(4, 4, ChunkBy::Text).is_err());
    }

    /// A small deterministic generator for the property test (no extra dependency).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_text(rng: &mut Rng) -> String {
        const PIECES: &[&str] = &[
            "a",
            "bb",
            "ccc",
            "dddd",
            "eeeeeeeeee",
            "é",
            "日本",
            "word.",
            "end!",
            "x?",
            "😀",
            "longlonglonglonglonglong",
        ];
        const GAPS: &[&str] = &[" ", " ", " ", "  ", "\n", "\n\n", "\t", " \n \n"];
        let n = rng.below(120) as usize;
        let mut s = String::new();
        if rng.below(3) == 0 {
            s.push(' ');
        }
        for i in 0..n {
            if i > 0 {
                s.push_str(GAPS[rng.below(GAPS.len() as u64) as usize]);
            }
            s.push_str(PIECES[rng.below(PIECES.len() as u64) as usize]);
        }
        s
    }

    /// Chunks cover the text in order, each within the limit, slicing exactly on char
    /// boundaries, with overlaps of at most the asked size and no shorter than a word
    /// boundary allows.
    #[test]
    fn random_texts_chunk_within_the_limit_covering_everything_in_order() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..3000 {
            let text = random_text(&mut rng);
            let max = 5 + rng.below(30) as usize;
            let overlap = rng.below(max as u64 / 2 + 1) as usize;
            let by = [ChunkBy::Text, ChunkBy::Markdown, ChunkBy::Code][case % 3];
            let cfg = ChunkConfig::new(max, overlap.min(max - 1), by).unwrap();
            let got = split(&text, &cfg, 2, &mut |r| fake_count(&text[r])).unwrap();
            check_chunks(&text, &cfg, &got, case);
        }
    }

    fn check_chunks(text: &str, cfg: &ChunkConfig, got: &[Range<usize>], case: usize) {
        let ctx = || format!("case {case}: {text:?} {cfg:?} {got:?}");
        if text.trim().is_empty() {
            assert_eq!(got.len(), 1, "{}", ctx());
            assert_eq!(got[0], 0..text.len(), "{}", ctx());
            return;
        }
        let mut covered = 0;
        for (k, r) in got.iter().enumerate() {
            assert!(
                text.is_char_boundary(r.start) && text.is_char_boundary(r.end),
                "{}",
                ctx()
            );
            assert!(r.start < r.end, "{}", ctx());
            let chunk = &text[r.clone()];
            assert!(fake_count(chunk) <= cfg.max_tokens, "{}", ctx());
            // Everything before this chunk's start is covered or whitespace.
            if r.start > covered {
                assert!(
                    text[covered..r.start].trim().is_empty(),
                    "gap before {k}: {}",
                    ctx()
                );
            }
            if k > 0 {
                let prev = &got[k - 1];
                assert!(r.start > prev.start && r.end > prev.end, "{}", ctx());
                if r.start < prev.end {
                    let shared = fake_count(&text[r.start..prev.end]) - 2;
                    assert!(shared <= cfg.overlap, "overlap {shared}: {}", ctx());
                    // The word before the overlap's start would have made it too big.
                    let before = words(text, cfg.by)
                        .into_iter()
                        .rfind(|w| w.start > prev.start && w.start < r.start);
                    if let Some(w) = before {
                        let longer = fake_count(&text[w.start..prev.end]) - 2;
                        assert!(longer > cfg.overlap, "overlap could be {longer}: {}", ctx());
                    }
                }
            }
            covered = covered.max(r.end);
        }
        assert!(
            text[covered..].trim().is_empty(),
            "tail uncovered: {}",
            ctx()
        );
    }
}
