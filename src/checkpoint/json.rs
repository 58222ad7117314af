//! The one byte scan both hand-written JSON passes (shard headers, the index) spend most of their
//! time in: where a string with no escape ends.

pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
pub(crate) const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `v` below `n` (n ≤ 128), exact up to the first such byte: the
/// borrow of a subtraction only ever marks bytes above one already marked.
#[inline]
fn below(v: u64, n: u8) -> u64 {
    v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH
}

/// The high bit of each byte of `v` equal to `c`, exact up to the first one.
#[inline]
pub(crate) fn equal(v: u64, c: u8) -> u64 {
    below(v ^ (ONES * u64::from(c)), 1)
}

/// The position of the closing quote of a JSON string whose text starts at `b[start]` (just past
/// the opening quote), when the string holds no escape and no control character; None when it
/// does (the caller hands such a string to serde) or never ends. Eight bytes a step.
pub(crate) fn plain_string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    while let Some(chunk) = b.get(i..i + 8) {
        let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let hit = equal(v, b'"') | equal(v, b'\\') | below(v, 0x20);
        if hit != 0 {
            i += (hit.trailing_zeros() / 8) as usize;
            return (b[i] == b'"').then_some(i);
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' {
            return Some(i);
        }
        if c == b'\\' || c < 0x20 {
            return None;
        }
        i += 1;
    }
    None
}

/// Whether `b` can stand between quotes in JSON as it is: no quote, backslash or control character
/// (what serde_json escapes). Eight bytes a step.
pub(crate) fn plain(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(8);
    for chunk in &mut chunks {
        let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if equal(v, b'"') | equal(v, b'\\') | below(v, 0x20) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&c| c != b'"' && c != b'\\' && c >= 0x20)
}

/// A cursor over JSON text for the hand-written passes: what both read the same way. Each pass
/// adds the readers of its own shapes in its own module.
pub(crate) struct Cur<'a> {
    pub(crate) text: &'a str,
    pub(crate) b: &'a [u8],
    pub(crate) i: usize,
}

impl<'a> Cur<'a> {
    pub(crate) fn new(text: &'a str) -> Cur<'a> {
        Cur { text, b: text.as_bytes(), i: 0 }
    }
    pub(crate) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }
    pub(crate) fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }
    pub(crate) fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }
    /// A string with no escape and no control character, borrowed (None for any other: the
    /// serde path decides).
    pub(crate) fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let end = plain_string_end(self.b, start)?;
        self.i = end + 1;
        // Both ends sit on ASCII quotes of valid UTF-8 text: char boundaries.
        Some(&self.text[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::{plain, plain_string_end};

    #[test]
    fn plain_as_byte_loop() {
        for len in 0..24 {
            for at in 0..len {
                for c in [b'"', b'\\', 0u8, 0x1f, b'\n', b'a', 0x7f, 0xc3] {
                    let mut b = vec![b'x'; len];
                    b[at] = c;
                    assert_eq!(plain(&b), c != b'"' && c != b'\\' && c >= 0x20, "{b:?}");
                }
            }
            assert!(plain(&vec![b'y'; len]));
        }
    }

    /// Against the byte-at-a-time definition, at every start and length around the 8-byte steps,
    /// with every kind of stop byte at every position.
    #[test]
    fn as_byte_loop() {
        let slow = |b: &[u8], s: usize| -> Option<usize> {
            for (i, &c) in b.iter().enumerate().skip(s) {
                match c {
                    b'"' => return Some(i),
                    b'\\' => return None,
                    c if c < 0x20 => return None,
                    _ => {}
                }
            }
            None
        };
        let fill = [b'a', 0x7f, 0x80, 0xff, b'!', b'#', 0x20, 0x21, b'[', b']'];
        for len in 0..40 {
            for stop in [None, Some(b'"'), Some(b'\\'), Some(0x00), Some(0x1f), Some(b'\n')] {
                for at in 0..len.max(1) {
                    for &f in &fill {
                        let mut b = vec![f; len];
                        if let (Some(c), true) = (stop, at < len) {
                            b[at] = c;
                        }
                        // A second stop later: only the first counts.
                        if len > at + 3 {
                            b[at + 3] = b'"';
                        }
                        for s in 0..3.min(len + 1) {
                            assert_eq!(plain_string_end(&b, s), slow(&b, s), "{b:?} from {s}");
                        }
                    }
                }
            }
        }
    }
}
