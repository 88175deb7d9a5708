//! Skipping what a resumed run has done, and resuming after a read error.
//!
//! A resume reads its input from the start and skips the items its checkpoint covers (a
//! compressed stream cannot seek, and the readers count items, not bytes). When a run stopped at
//! a read error (a truncated `.gz`, a corrupt `.zst`), its metadata keeps an [`InputPrefix`]:
//! the digest of the ids and texts of the items its last checkpoint covers. A resume may then
//! take a changed file (the fixed one): [`SkipFirst`] digests the items it skips the same way and
//! ends the input with an error naming the difference if they are not the same items.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::item::SourceItem;
use crate::reader::ItemSource;

/// The first `items` items of an input, as a digest of their ids and texts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputPrefix {
    pub items: u64,
    pub sha256: String,
}

fn feed(h: &mut Sha256, item: &SourceItem) {
    h.update(item.id.to_string().as_bytes());
    h.update([0]);
    match &item.text {
        Ok(t) => h.update(t.as_bytes()),
        Err(e) => h.update(format!("\u{0}error {}", e.kind.as_str()).as_bytes()),
    }
    h.update([0xff]);
}

/// The digest of the first `items` items of `source`; `None` if it has fewer.
pub fn digest(source: &mut dyn ItemSource, items: u64) -> Option<InputPrefix> {
    let mut h = Sha256::new();
    for _ in 0..items {
        feed(&mut h, &source.next_item()?);
    }
    Some(InputPrefix {
        items,
        sha256: format!("{:x}", h.finalize()),
    })
}

/// Skips the first `left` items of `inner`; with `check`, they must digest to it.
pub struct SkipFirst {
    inner: Box<dyn ItemSource>,
    left: u64,
    check: Option<(Sha256, InputPrefix)>,
    error: Option<std::io::Error>,
}

impl SkipFirst {
    pub fn new(inner: Box<dyn ItemSource>, left: u64, check: Option<InputPrefix>) -> Self {
        SkipFirst {
            inner,
            left,
            check: check
                .filter(|c| c.items == left)
                .map(|c| (Sha256::new(), c)),
            error: None,
        }
    }

    fn differs(&mut self, why: &str) -> Option<SourceItem> {
        self.error = Some(std::io::Error::other(format!(
            "the input differs from the one the run read ({why}): resume only with the same items, fixed"
        )));
        None
    }
}

impl ItemSource for SkipFirst {
    fn next_item(&mut self) -> Option<SourceItem> {
        while self.left > 0 {
            let Some(item) = self.inner.next_item() else {
                if self.check.is_some() {
                    return self.differs("it has fewer items than the run had done");
                }
                return None;
            };
            if let Some((h, _)) = self.check.as_mut() {
                feed(h, &item);
            }
            self.left -= 1;
        }
        if let Some((h, want)) = self.check.take() {
            if format!("{:x}", h.finalize()) != want.sha256 {
                let why = format!("its first {} items are not the run's", want.items);
                return self.differs(&why);
            }
        }
        self.inner.next_item()
    }
    fn skipped(&self) -> u64 {
        self.inner.skipped()
    }
    fn take_error(&mut self) -> Option<std::io::Error> {
        self.error.take().or_else(|| self.inner.take_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::IterSource;

    fn source(texts: &[&str]) -> Box<dyn ItemSource> {
        let items: Vec<SourceItem> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| SourceItem::new(i as u64, *t))
            .collect();
        Box::new(IterSource(items.into_iter()))
    }

    #[test]
    fn skipped_items_must_digest_to_the_prefix() {
        let p = digest(source(&["a", "b", "c"]).as_mut(), 2).unwrap();
        let mut same = SkipFirst::new(source(&["a", "b", "x", "y"]), 2, Some(p.clone()));
        assert_eq!(same.next_item().unwrap().text.unwrap(), "x");
        assert!(same.take_error().is_none());
        let mut other = SkipFirst::new(source(&["b", "a", "x"]), 2, Some(p.clone()));
        assert!(other.next_item().is_none());
        assert!(other
            .take_error()
            .unwrap()
            .to_string()
            .contains("first 2 items"));
        let mut short = SkipFirst::new(source(&["a"]), 2, Some(p));
        assert!(short.next_item().is_none());
        assert!(short.take_error().is_some());
        assert!(digest(source(&["a"]).as_mut(), 2).is_none());
    }
}
