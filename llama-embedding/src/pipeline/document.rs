//! Document vectors (`--doc-vector mean`): a chunked item's chunk vectors, in chunk order,
//! become one vector for the item, their mean, L2-normalised when the run normalises. Pure and
//! in a fixed order, so a resumed run gives the same bits.

use crate::item::{EmbeddingResult, ItemOutcome};
use crate::model::Normalize;
use crate::vectors::{l2_normalize, mean};

/// The item's one outcome: its document vector, or its failure as it came.
pub(crate) fn document(parts: Vec<ItemOutcome>, normalize: Normalize) -> ItemOutcome {
    let mut chunks: Vec<EmbeddingResult> = Vec::with_capacity(parts.len());
    for p in parts {
        match p {
            ItemOutcome::Embedded(r) => chunks.push(r),
            failed @ ItemOutcome::Failed(_) => return failed,
        }
    }
    ItemOutcome::Embedded(document_row(chunks, normalize))
}

fn document_row(chunks: Vec<EmbeddingResult>, normalize: Normalize) -> EmbeddingResult {
    let n = chunks.len();
    let rows: Vec<&[f32]> = chunks.iter().map(|c| c.embedding.as_slice()).collect();
    let mut embedding = mean(&rows, chunks[0].embedding.len());
    if normalize == Normalize::L2 {
        l2_normalize(&mut embedding);
    }
    let n_tokens = chunks.iter().map(|c| c.n_tokens).sum();
    let first = &chunks[0];
    let last = &chunks[n - 1];
    let n_chars = match (&first.chunk, &last.chunk) {
        (Some(a), Some(b)) => b.char_end - a.char_start,
        _ => chunks.iter().map(|c| c.n_chars).sum(),
    };
    let text = first.text.is_some().then(|| {
        chunks
            .iter()
            .filter_map(|c| c.text.as_deref())
            .collect::<Vec<_>>()
            .join("\n")
    });
    let key = chunks
        .iter()
        .map(|c| c.key.as_deref())
        .collect::<Option<Vec<&str>>>()
        .map(crate::key::document_key);
    let mut chunks = chunks.into_iter();
    let head = chunks.next().expect("an item has a chunk");
    EmbeddingResult {
        index: head.index,
        id: head.item_id().clone(),
        embedding,
        n_tokens,
        truncated: false,
        n_chars,
        extra: head.extra,
        text,
        chunk: None,
        key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{Chunk, ItemId};

    fn chunk(k: u32, v: Vec<f32>) -> ItemOutcome {
        ItemOutcome::Embedded(EmbeddingResult {
            index: 7,
            id: ItemId::Str(format!("doc#{k}")),
            embedding: v,
            n_tokens: 10,
            truncated: false,
            n_chars: 5,
            extra: None,
            text: None,
            key: None,
            chunk: Some(Chunk {
                parent_id: ItemId::Str("doc".into()),
                chunk: k,
                n_chunks: 2,
                byte_start: k as usize * 4,
                byte_end: k as usize * 4 + 5,
                char_start: k as usize * 4,
                char_end: k as usize * 4 + 5,
            }),
        })
    }

    #[test]
    fn the_document_vector_is_the_normalised_mean_of_its_chunks() {
        let o = document(
            vec![chunk(0, vec![1.0, 0.0]), chunk(1, vec![0.0, 1.0])],
            Normalize::L2,
        );
        let r = o.into_embedded().unwrap();
        assert_eq!(r.id, ItemId::Str("doc".into()));
        assert!(r.chunk.is_none());
        assert_eq!((r.n_tokens, r.n_chars), (20, 9));
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((r.embedding[0] - h).abs() < 1e-7 && (r.embedding[1] - h).abs() < 1e-7);
        let plain = document(
            vec![chunk(0, vec![1.0, 0.0]), chunk(1, vec![0.0, 1.0])],
            Normalize::None,
        );
        assert_eq!(plain.into_embedded().unwrap().embedding, vec![0.5, 0.5]);
    }
}
