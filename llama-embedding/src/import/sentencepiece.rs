//! Reads the pieces of a SentencePiece model (`tokenizer.model`, a protobuf `ModelProto`)
//! without the sentencepiece library: only field 1 (`repeated SentencePiece pieces`) is read,
//! each piece's text (1), score (2) and type (3); every other field is skipped by its wire
//! type. The format is in sentencepiece's `sentencepiece_model.proto`.

/// A piece's type, as `ModelProto.SentencePiece.Type` numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Byte = 6,
    Unused = 5,
}

impl PieceType {
    fn from_proto(n: u64) -> Option<PieceType> {
        Some(match n {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub text: String,
    pub score: f32,
    pub kind: PieceType,
}

/// The pieces of a serialised `ModelProto`, in id order.
///
/// # Errors
/// A description of the first malformed field (truncated varint or length, a piece that is
/// not UTF-8, an unknown piece type or wire type).
pub fn read_pieces(bytes: &[u8]) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut r = Reader { bytes, at: 0 };
    while !r.done() {
        let (field, wire) = r.key()?;
        if field == 1 && wire == 2 {
            let body = r.length_delimited()?;
            pieces.push(read_piece(body).map_err(|e| format!("piece {}: {e}", pieces.len()))?);
        } else {
            r.skip(wire)?;
        }
    }
    Ok(pieces)
}

fn read_piece(bytes: &[u8]) -> Result<Piece, String> {
    let mut r = Reader { bytes, at: 0 };
    let mut piece = Piece {
        text: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    while !r.done() {
        match r.key()? {
            (1, 2) => {
                piece.text = String::from_utf8(r.length_delimited()?.to_vec())
                    .map_err(|_| "text is not UTF-8".to_string())?;
            }
            (2, 5) => piece.score = f32::from_le_bytes(r.fixed::<4>()?),
            (3, 0) => {
                let n = r.varint()?;
                piece.kind = PieceType::from_proto(n).ok_or(format!("unknown type {n}"))?;
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(piece)
}

/// A cursor over protobuf wire-format bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.at).ok_or("truncated varint")?;
            self.at += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn key(&mut self) -> Result<(u64, u64), String> {
        let k = self.varint()?;
        Ok((k >> 3, k & 7))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("field of {n} bytes runs past the end"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn length_delimited(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
        self.take(n)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn skip(&mut self, wire: u64) -> Result<(), String> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.length_delimited().map(drop),
            5 => self.take(4).map(drop),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

/// Serialises pieces as a `ModelProto` (only its `pieces`): the fixtures' `tokenizer.model`.
pub fn write_pieces(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        let mut body = Vec::new();
        body.push(0x0a);
        put_varint(&mut body, p.text.len() as u64);
        body.extend_from_slice(p.text.as_bytes());
        body.push(0x15);
        body.extend_from_slice(&p.score.to_le_bytes());
        body.push(0x18);
        put_varint(&mut body, p.kind as u64);
        out.push(0x0a);
        put_varint(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_round_trip_and_other_fields_are_skipped() {
        let pieces = vec![
            Piece {
                text: "<pad>".into(),
                score: 0.0,
                kind: PieceType::Control,
            },
            Piece {
                text: "\u{2581}héllo".into(),
                score: -12.5,
                kind: PieceType::Normal,
            },
            Piece {
                text: "<0x0A>".into(),
                score: 0.0,
                kind: PieceType::Byte,
            },
        ];
        let mut bytes = write_pieces(&pieces);
        // A trainer_spec (field 2, length-delimited) and a varint field 40 after the pieces.
        bytes.extend_from_slice(&[0x12, 0x03, 0x08, 0x96, 0x01]);
        bytes.extend_from_slice(&[0xc0, 0x02, 0x05]);
        assert_eq!(read_pieces(&bytes).unwrap(), pieces);
        // 300 needs a two-byte length: the varint path.
        let long = vec![Piece {
            text: "x".repeat(300),
            score: 1.0,
            kind: PieceType::UserDefined,
        }];
        assert_eq!(read_pieces(&write_pieces(&long)).unwrap(), long);
    }

    #[test]
    fn malformed_models_are_errors() {
        let bytes = write_pieces(&[Piece {
            text: "abc".into(),
            score: 0.0,
            kind: PieceType::Normal,
        }]);
        assert!(read_pieces(&bytes[..bytes.len() - 2]).is_err());
        // An unknown piece type (7).
        let bad = [0x0a, 0x05, 0x0a, 0x01, b'a', 0x18, 0x07];
        assert!(read_pieces(&bad).unwrap_err().contains("unknown type 7"));
        // A wire type protobuf does not have (7).
        assert!(read_pieces(&[0x0f]).is_err());
    }
}
