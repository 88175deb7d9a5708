//! The read stage: a thread that pulls items from the [`ItemSource`] and numbers them from the
//! run's first index; at the end it tells the run how many there were and why reading stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use super::flow::Msg;
use crate::item::SourceItem;
use crate::reader::ItemSource;

/// Reads `source` into `items` until it ends, the run is cancelled or the tokenizer is gone.
pub(crate) fn read(
    mut source: Box<dyn ItemSource>,
    first: u64,
    items: SyncSender<(u64, SourceItem)>,
    out: SyncSender<Msg>,
    cancel: Arc<AtomicBool>,
) {
    let mut index = first;
    while !cancel.load(Ordering::Relaxed) {
        let Some(item) = source.next_item() else {
            break;
        };
        if items.send((index, item)).is_err() {
            return;
        }
        index += 1;
    }
    drop(items);
    let _ = out.send(Msg::EndOfInput {
        items: index,
        skipped: source.skipped(),
        error: source.take_error(),
    });
}
