//! The bodies of the fuzz targets in `fuzz/` (cargo fuzz), here so that the normal test suite
//! replays the committed corpus through exactly the same code (`tests/fuzz_corpus.rs`).
//!
//! Each function takes arbitrary bytes, must never panic, and checks invariants that hold for
//! any input: what a reader returns stays inside the input, ids and positions go forward,
//! selections never return more than they allow, and a checkpoint that decodes round-trips.

use std::collections::HashSet;
use std::io::Cursor;

use crate::input::{open_reader, InputFormat, InputSpec, Selection, Shard};
use crate::item::ItemId;
use crate::reader::ItemSource;
use crate::rundir::{self, Checkpoint};

/// Options picked by the first byte, so the fuzzer explores them too.
fn spec_and_selection(format: InputFormat, flags: u8) -> (InputSpec, Selection) {
    let spec = InputSpec {
        format,
        text_field: if flags & 1 == 0 { "text" } else { "a.b" }.into(),
        id_field: (flags & 2 != 0).then(|| "id".into()),
        template: (flags & 4 != 0).then(|| "{title} / {a__b} {text}".into()),
        keep_fields: if flags & 8 != 0 {
            vec!["title".into(), "a.b".into(), "id".into()]
        } else {
            Vec::new()
        },
        comments: flags & 16 != 0,
        max_record_bytes: if flags & 32 != 0 { 64 } else { 1 << 20 },
        globs: Vec::new(),
    };
    let selection = match flags >> 6 {
        0 => Selection::default(),
        1 => Selection {
            start: Some(1),
            end: Some(5),
            limit: Some(3),
            ..Selection::default()
        },
        2 => Selection {
            only: Some(["0", "2", "x"].iter().map(|s| s.to_string()).collect()),
            skip: Some(HashSet::from(["2".to_string()])),
            ..Selection::default()
        },
        _ => Selection {
            shard: Some(Shard::new(1, 3).expect("valid shard")),
            ..Selection::default()
        },
    };
    (spec, selection)
}

fn drain(mut src: Box<dyn ItemSource>, data: &[u8], selection: &Selection, format: InputFormat) {
    let mut n = 0u64;
    let mut last_line = 0u64;
    let mut last_byte: Option<u64> = None;
    let lines = data.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    while let Some(item) = src.next_item() {
        n += 1;
        if let Some(p) = item.position {
            // CSV also ends records at a lone CR (old Mac files): several records can share a
            // line as counted by LF.
            if matches!(format, InputFormat::Csv | InputFormat::Tsv) {
                assert!(p.line >= last_line, "line {} after {last_line}", p.line);
            } else {
                assert!(p.line > last_line, "line {} after {last_line}", p.line);
            }
            if matches!(format, InputFormat::Text | InputFormat::Jsonl) {
                assert!(p.line <= lines, "line {} of {lines}", p.line);
            }
            assert!(p.byte <= data.len() as u64, "byte offset inside the input");
            if let Some(b) = last_byte {
                assert!(p.byte > b, "byte offsets go forward");
            }
            last_line = p.line;
            last_byte = Some(p.byte);
        }
        if format == InputFormat::Text {
            let p = item.position.expect("text lines have positions");
            assert_eq!(
                item.id,
                ItemId::Num(p.line - 1),
                "a line's id is its number"
            );
            if let Ok(t) = &item.text {
                assert!(!t.contains('\n'), "a line holds no newline");
            }
        }
        if let Some(only) = &selection.only {
            assert!(
                only.contains(&item.id.to_string()),
                "--only let {} through",
                item.id
            );
        }
        if let Some(shard) = &selection.shard {
            assert!(
                shard.contains(&item.id.to_string()),
                "an item of another shard"
            );
        }
        if matches!(format, InputFormat::Text | InputFormat::Jsonl) {
            assert!(n <= lines, "more items than lines");
        }
    }
    if let Some(limit) = selection.limit {
        assert!(n <= limit, "{n} items over --limit {limit}");
    }
    // Reading from memory cannot fail.
    assert!(src.take_error().is_none());
}

fn reader(format: InputFormat, data: &[u8]) {
    let (flags, body) = match data.split_first() {
        Some((f, rest)) => (*f, rest),
        None => (0, data),
    };
    let (spec, selection) = spec_and_selection(format, flags);
    let r: Box<dyn std::io::BufRead + Send> = Box::new(Cursor::new(body.to_vec()));
    // CSV without the needed column and JSON that is not an array are refused up front.
    if let Ok(src) = open_reader(r, "fuzz", &spec, &selection) {
        drain(src, body, &selection, format);
    }
}

/// Plain text, one item a line.
pub fn text_reader(data: &[u8]) {
    reader(InputFormat::Text, data);
}

/// JSONL records (text field, ids, templates, kept fields).
pub fn jsonl_reader(data: &[u8]) {
    reader(InputFormat::Jsonl, data);
}

/// CSV and TSV with a header (the first byte's low bit picks TSV).
pub fn csv_reader(data: &[u8]) {
    let tsv = data.first().is_some_and(|b| b & 1 != 0);
    reader(
        if tsv {
            InputFormat::Tsv
        } else {
            InputFormat::Csv
        },
        data,
    );
}

/// A JSON array of records.
pub fn json_reader(data: &[u8]) {
    reader(InputFormat::Json, data);
}

/// The checkpoint parser: the checked form (checksum first) and the record itself; anything
/// that decodes must round-trip through the writer's bytes.
pub fn checkpoint(data: &[u8]) {
    if let Ok(c) = rundir::parse_checked::<Checkpoint>(data) {
        let bytes = rundir::checked_bytes(&c).expect("a decoded checkpoint encodes");
        let again: Checkpoint = rundir::parse_checked(&bytes).expect("and decodes again");
        assert_eq!(again, c);
    }
    // Past the checksum, the same decoder sees whatever a damaged-but-consistent file holds.
    if let Ok(c) = serde_json::from_slice::<Checkpoint>(data) {
        let bytes = rundir::checked_bytes(&c).expect("encodes");
        let again: Checkpoint = rundir::parse_checked(&bytes).expect("decodes");
        assert_eq!(again, c);
    }
}

/// Runs the target named `name` on `data` (for the corpus replay).
///
/// # Panics
/// On an unknown name, and wherever the target finds a broken invariant.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "text_reader" => text_reader(data),
        "jsonl_reader" => jsonl_reader(data),
        "csv_reader" => csv_reader(data),
        "json_reader" => json_reader(data),
        "checkpoint" => checkpoint(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// The targets, as `fuzz/fuzz_targets/*.rs` name them.
pub const TARGETS: [&str; 5] = [
    "text_reader",
    "jsonl_reader",
    "csv_reader",
    "json_reader",
    "checkpoint",
];
