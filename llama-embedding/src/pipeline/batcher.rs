//! The batcher: packs tokenised items into decode batches under a [`TokenBudget`]. Pure (no
//! FFI), so it is unit-tested without a model.
//!
//! Items are grouped in fixed windows of the item index (`[k*W, (k+1)*W)`); batches never span
//! two windows, and inside a window items may be sorted by length (shorter attention spans per
//! batch). The batches therefore depend only on the items, never on timing or on where a run
//! started: a run resumed at a window boundary packs exactly the batches the uninterrupted run
//! packed, which is what makes resumed output byte-identical (llama.cpp's sums over a batch
//! round differently when the batch differs).

/// Limits for one decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBudget {
    /// Packing target in tokens; a single longer item still gets a batch of its own.
    pub tokens: usize,
    /// Most sequences (texts) in one batch.
    pub sequences: usize,
}

/// Something with a token count and an index (a tokenised item).
pub trait Packable {
    fn n_tokens(&self) -> usize;
    fn index(&self) -> u64;
}

/// Packs items into batches; see the module docs.
#[derive(Debug)]
pub struct Batcher<T> {
    budget: TokenBudget,
    window: u64,
    sort_by_length: bool,
    window_id: Option<u64>,
    pending: Vec<T>,
}

impl<T: Packable> Batcher<T> {
    /// # Panics
    /// When the budget or window is zero (callers validate their configuration first).
    pub fn new(budget: TokenBudget, window: usize, sort_by_length: bool) -> Self {
        assert!(budget.tokens > 0 && budget.sequences > 0 && window > 0);
        Batcher {
            budget,
            window: window as u64,
            sort_by_length,
            window_id: None,
            pending: Vec::new(),
        }
    }

    /// Tells the batcher that items up to `index` have been seen (including ones that will
    /// never reach it because they failed); returns the batches of any window now complete.
    pub fn advance_to(&mut self, index: u64) -> Vec<Vec<T>> {
        let w = index / self.window;
        match self.window_id {
            Some(cur) if cur == w => Vec::new(),
            Some(_) => {
                self.window_id = Some(w);
                self.flush()
            }
            None => {
                self.window_id = Some(w);
                Vec::new()
            }
        }
    }

    /// Adds an item; returns the batches that became complete.
    pub fn push(&mut self, item: T) -> Vec<Vec<T>> {
        let out = self.advance_to(item.index());
        self.pending.push(item);
        out
    }

    /// Packs what is pending (end of input or end of a window).
    pub fn flush(&mut self) -> Vec<Vec<T>> {
        let mut items = std::mem::take(&mut self.pending);
        if items.is_empty() {
            return Vec::new();
        }
        if self.sort_by_length {
            // Stable: equal lengths keep input order, so the plan is deterministic.
            items.sort_by_key(Packable::n_tokens);
        }
        pack(items, self.budget)
    }
}

/// Greedy packing in the given order.
pub fn pack<T: Packable>(items: Vec<T>, budget: TokenBudget) -> Vec<Vec<T>> {
    let mut batches = Vec::new();
    let mut cur: Vec<T> = Vec::new();
    let mut cur_tokens = 0;
    for item in items {
        let n = item.n_tokens();
        let fits =
            cur.is_empty() || (cur_tokens + n <= budget.tokens && cur.len() < budget.sequences);
        if !fits {
            batches.push(std::mem::take(&mut cur));
            cur_tokens = 0;
        }
        cur_tokens += n;
        cur.push(item);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct It(u64, usize);
    impl Packable for It {
        fn n_tokens(&self) -> usize {
            self.1
        }
        fn index(&self) -> u64 {
            self.0
        }
    }

    fn run(
        items: &[It],
        budget: TokenBudget,
        window: usize,
        sort: bool,
        start: usize,
    ) -> Vec<Vec<u64>> {
        let mut b = Batcher::new(budget, window, sort);
        let mut out = Vec::new();
        for it in &items[start..] {
            out.extend(b.push(it.clone()));
        }
        out.extend(b.flush());
        out.into_iter()
            .map(|v| v.into_iter().map(|i| i.0).collect())
            .collect()
    }

    #[test]
    fn packs_under_the_token_budget_and_sequence_cap() {
        let items: Vec<It> = (0..10).map(|i| It(i, 3)).collect();
        let b = run(
            &items,
            TokenBudget {
                tokens: 7,
                sequences: 8,
            },
            100,
            false,
            0,
        );
        assert_eq!(
            b,
            vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7], vec![8, 9]]
        );
        let b = run(
            &items,
            TokenBudget {
                tokens: 100,
                sequences: 4,
            },
            100,
            false,
            0,
        );
        assert_eq!(b, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    }

    #[test]
    fn an_item_over_the_budget_gets_a_batch_of_its_own() {
        let items = vec![It(0, 2), It(1, 50), It(2, 2)];
        let b = run(
            &items,
            TokenBudget {
                tokens: 10,
                sequences: 8,
            },
            100,
            false,
            0,
        );
        assert_eq!(b, vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn sorting_stays_inside_a_window_and_every_item_is_batched_once() {
        let items: Vec<It> = (0..9).map(|i| It(i, (9 - i) as usize)).collect();
        let b = run(
            &items,
            TokenBudget {
                tokens: 100,
                sequences: 2,
            },
            3,
            true,
            0,
        );
        assert_eq!(
            b,
            vec![
                vec![2, 1],
                vec![0],
                vec![5, 4],
                vec![3],
                vec![8, 7],
                vec![6]
            ]
        );
        let mut all: Vec<u64> = b.concat();
        all.sort_unstable();
        assert_eq!(all, (0..9).collect::<Vec<_>>());
    }

    #[test]
    fn resuming_at_a_window_boundary_reproduces_the_same_batches() {
        let items: Vec<It> = (0..50).map(|i| It(i, 1 + (i as usize * 7) % 13)).collect();
        let budget = TokenBudget {
            tokens: 20,
            sequences: 4,
        };
        let full = run(&items, budget, 10, true, 0);
        let resumed = run(&items, budget, 10, true, 30);
        assert_eq!(&full[full.len() - resumed.len()..], &resumed[..]);
        assert_eq!(resumed[0][0] / 10, 3);
    }

    #[test]
    fn failed_items_advance_the_window() {
        let mut b = Batcher::new(
            TokenBudget {
                tokens: 100,
                sequences: 8,
            },
            2,
            false,
        );
        assert!(b.push(It(0, 1)).is_empty());
        // Item 1 failed upstream; item 2 opens the next window and flushes the first.
        assert_eq!(b.advance_to(1).len(), 0);
        let out = b.advance_to(2);
        assert_eq!(out, vec![vec![It(0, 1)]]);
    }
}
