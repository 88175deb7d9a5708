//! The order stage: segments come back from the engine threads in any order; [`Reorder`] hands
//! them out by `(item, part)`, an item only once all its parts are back, so output is always in
//! input order and the parts of an item are together and in order. Pure (no FFI).

use std::collections::BTreeMap;

/// Where a segment belongs: part `part` of `parts` of item `item` (the item's index in the
/// input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentKey {
    pub item: u64,
    pub part: u32,
    pub parts: u32,
}

impl SegmentKey {
    /// An item of one part.
    pub fn whole(item: u64) -> Self {
        SegmentKey {
            item,
            part: 0,
            parts: 1,
        }
    }
}

/// Reorders segments into `(item, part)` order (see the module docs).
#[derive(Debug)]
pub struct Reorder<T> {
    next: u64,
    pending: BTreeMap<u64, Parts<T>>,
}

#[derive(Debug)]
struct Parts<T> {
    parts: u32,
    got: BTreeMap<u32, T>,
}

impl<T> Reorder<T> {
    /// Expects item `first` first (a resumed run starts past 0).
    pub fn new(first: u64) -> Self {
        Reorder {
            next: first,
            pending: BTreeMap::new(),
        }
    }

    /// The index of the next item to hand out.
    pub fn next_item(&self) -> u64 {
        self.next
    }

    /// Items waiting for an earlier item or for their other parts.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// Takes one segment. A segment of an item already handed out, or a part number beyond
    /// its item's parts, is a bug in the stage before: it panics rather than reorder wrongly.
    pub fn push(&mut self, key: SegmentKey, value: T) {
        assert!(
            key.item >= self.next && key.part < key.parts,
            "segment {key:?} is out of place (next item {})",
            self.next
        );
        let entry = self.pending.entry(key.item).or_insert_with(|| Parts {
            parts: key.parts,
            got: BTreeMap::new(),
        });
        assert_eq!(
            entry.parts, key.parts,
            "item {} changed its part count",
            key.item
        );
        entry.got.insert(key.part, value);
    }

    /// The next item's parts, in order, once they are all back.
    pub fn pop(&mut self) -> Option<(u64, Vec<T>)> {
        let ready = self
            .pending
            .get(&self.next)
            .is_some_and(|p| p.got.len() == p.parts as usize);
        if !ready {
            return None;
        }
        let item = self.next;
        let parts = self.pending.remove(&item).expect("checked above");
        self.next += 1;
        Some((item, parts.got.into_values().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(item: u64, part: u32, parts: u32) -> SegmentKey {
        SegmentKey { item, part, parts }
    }

    #[test]
    fn items_come_out_in_order_with_their_parts_in_order() {
        let mut r = Reorder::new(10);
        r.push(key(11, 0, 1), "b");
        assert_eq!(r.pop(), None);
        r.push(key(10, 2, 3), "a2");
        r.push(key(10, 0, 3), "a0");
        assert_eq!(r.pop(), None, "item 10 still misses a part");
        r.push(key(10, 1, 3), "a1");
        assert_eq!(r.pop(), Some((10, vec!["a0", "a1", "a2"])));
        assert_eq!(r.pop(), Some((11, vec!["b"])));
        assert_eq!(r.pop(), None);
        assert_eq!(r.next_item(), 12);
        assert_eq!(r.waiting(), 0);
    }

    #[test]
    fn any_arrival_order_gives_the_same_output() {
        // 40 items of 1..=4 parts, pushed in a scrambled order.
        let keys: Vec<SegmentKey> = (0..40u64)
            .flat_map(|i| {
                let parts = (i % 4 + 1) as u32;
                (0..parts).map(move |p| key(i, p, parts))
            })
            .collect();
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&k| (k * 7919) % keys.len());
        let mut r = Reorder::new(0);
        let mut out = Vec::new();
        for k in order {
            r.push(keys[k], (keys[k].item, keys[k].part));
            while let Some((item, parts)) = r.pop() {
                out.push((item, parts));
            }
        }
        assert_eq!(out.len(), 40);
        for (i, (item, parts)) in out.iter().enumerate() {
            assert_eq!(*item, i as u64);
            let want: Vec<(u64, u32)> = (0..(i as u32 % 4 + 1)).map(|p| (i as u64, p)).collect();
            assert_eq!(parts, &want);
        }
    }

    #[test]
    #[should_panic(expected = "out of place")]
    fn a_part_beyond_its_item_is_a_bug() {
        Reorder::new(0).push(key(0, 2, 2), ());
    }
}
