//! Content keys: a SHA-256 per embedded text over the exact text as embedded (prefix included,
//! before tokenising) and a digest of everything else that makes its vector (the model's
//! sha256 and the vector and chunk settings: `VectorSettings::key_settings`).
//! In the exact mode two texts with the same key have the same vector, so a vector can be
//! reused wherever its key is found (issue 19). Pure: no model, no I/O.
//!
//! Every part is length-prefixed and the kinds are told apart, so no two different inputs hash
//! the same bytes:
//!
//! - a text: `sha256("text" ‖ salt ‖ len ‖ prefix+text)`;
//! - a late-chunked chunk (its vector sees its whole item): `sha256("late" ‖ salt ‖ len ‖
//!   prefix+item text ‖ byte range)`;
//! - a document vector (the mean of its chunks): `sha256("document" ‖ each chunk key)`.

use std::ops::Range;

use sha2::{Digest, Sha256};

/// Makes the keys of one run's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMaker {
    salt: [u8; 32],
}

impl KeyMaker {
    /// Keys for vectors made with `settings` (canonical JSON: the same settings give the same
    /// string).
    pub fn new(settings: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"llama-embed content key v1\0");
        h.update(settings.as_bytes());
        KeyMaker {
            salt: h.finalize().into(),
        }
    }

    fn start(&self, kind: &str) -> Sha256 {
        let mut h = Sha256::new();
        part(&mut h, kind.as_bytes());
        h.update(self.salt);
        h
    }

    /// The key of `text` embedded after `prefix`.
    pub fn text(&self, prefix: Option<&str>, text: &str) -> String {
        let mut h = self.start("text");
        embedded(&mut h, prefix, text);
        hex(h)
    }

    /// The key of the chunk `range` of `text`, late-chunked (pooled from the whole item).
    pub fn late(&self, prefix: Option<&str>, text: &str, range: Range<usize>) -> String {
        let mut h = self.start("late");
        embedded(&mut h, prefix, text);
        h.update((range.start as u64).to_le_bytes());
        h.update((range.end as u64).to_le_bytes());
        hex(h)
    }
}

/// The key of a document vector made from chunks with these keys, in order (they carry the
/// settings already).
pub fn document_key<'a>(chunk_keys: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    part(&mut h, b"document");
    for k in chunk_keys {
        part(&mut h, k.as_bytes());
    }
    hex(h)
}

fn part(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// `prefix + text`, as one length-prefixed part (the text the model reads).
fn embedded(h: &mut Sha256, prefix: Option<&str>, text: &str) {
    let p = prefix.unwrap_or("");
    h.update(((p.len() + text.len()) as u64).to_le_bytes());
    h.update(p.as_bytes());
    h.update(text.as_bytes());
}

fn hex(h: Sha256) -> String {
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_text_as_embedded_and_the_settings() {
        let a = KeyMaker::new(r#"{"model":"m1"}"#);
        let b = KeyMaker::new(r#"{"model":"m2"}"#);
        assert_eq!(a.text(None, "hello"), a.text(None, "hello"));
        assert_eq!(a.text(Some("q: "), "hello"), a.text(None, "q: hello"));
        assert_ne!(a.text(None, "hello"), a.text(None, "hello "));
        assert_ne!(a.text(None, "hello"), b.text(None, "hello"));
        assert_ne!(a.text(None, "hello"), a.late(None, "hello", 0..5));
        assert_ne!(a.late(None, "hello", 0..5), a.late(None, "hello", 0..4));
        let (k1, k2) = (a.text(None, "x"), a.text(None, "y"));
        assert_ne!(
            document_key([k1.as_str(), k2.as_str()]),
            document_key([k2.as_str(), k1.as_str()])
        );
        assert_eq!(a.text(None, "hello").len(), 64);
        // Fixed: a key written today is found by every later version. The value is Python's:
        // salt = sha256(b"llama-embed content key v1\0" + b"{}"); sha256(pack("<Q", 4) +
        // b"text" + salt + pack("<Q", 5) + b"hello").
        assert_eq!(
            KeyMaker::new("{}").text(None, "hello"),
            "317c143a3896a9f6456fc0f78b55df011dbadcbbac118082d2304617f727f962"
        );
    }
}
