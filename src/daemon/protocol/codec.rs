//! The two halves of the payload codec: [`Reader`], a bounded cursor that decodes fields and
//! never reads or allocates past the payload it was given, and [`Sink`], which encodes fields
//! into a buffer or only counts their bytes (so the encoded size of a frame is known without
//! building it).

use super::ProtocolError;

/// A bounded cursor over one frame's payload.
///
/// Every read checks the remaining length first and fails with [`ProtocolError::Truncated`]
/// instead of reading past the end; a declared length or count is checked against what remains
/// before anything is allocated.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `payload`.
    pub(super) fn new(payload: &'a [u8]) -> Self {
        Self { rest: payload }
    }

    /// The next `N` raw bytes.
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(ProtocolError::Truncated)?;
        self.rest = rest;
        Ok(*head)
    }

    /// One byte.
    pub(super) fn u8(&mut self) -> Result<u8, ProtocolError> {
        let [byte] = self.array()?;
        Ok(byte)
    }

    /// A big-endian `u16`.
    pub(super) fn u16(&mut self) -> Result<u16, ProtocolError> {
        self.array().map(u16::from_be_bytes)
    }

    /// A big-endian `u32`.
    pub(super) fn u32(&mut self) -> Result<u32, ProtocolError> {
        self.array().map(u32::from_be_bytes)
    }

    /// A big-endian `i64`.
    pub(super) fn i64(&mut self) -> Result<i64, ProtocolError> {
        self.array().map(i64::from_be_bytes)
    }

    /// A big-endian `u64`.
    pub(super) fn u64(&mut self) -> Result<u64, ProtocolError> {
        self.array().map(u64::from_be_bytes)
    }

    /// A `bytes` field: a `u32` length, then that many raw bytes, borrowed from the payload.
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let len = self.length()?;
        if len > self.rest.len() {
            return Err(ProtocolError::Truncated);
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    /// A `str` field: a `bytes` field that must be UTF-8.
    pub(super) fn str(&mut self) -> Result<&'a str, ProtocolError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| ProtocolError::InvalidUtf8)
    }

    /// A `list` field: a `u32` count, then that many items read by `item`.
    ///
    /// `min_item_len` is the smallest encoding of one item; the count is refused when even
    /// items that small could not fit in what remains, so a forged count never makes the
    /// vector allocate more than the payload could describe.
    pub(super) fn list<T>(
        &mut self,
        min_item_len: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, ProtocolError>,
    ) -> Result<Vec<T>, ProtocolError> {
        let count = self.length()?;
        if count > self.rest.len() / min_item_len.max(1) {
            return Err(ProtocolError::Truncated);
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(item(self)?);
        }
        Ok(items)
    }

    /// Like [`Reader::list`], for items that `item` keeps itself: a count, then that many.
    pub(super) fn each(
        &mut self,
        min_item_len: usize,
        mut item: impl FnMut(&mut Self) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        let count = self.length()?;
        if count > self.rest.len() / min_item_len.max(1) {
            return Err(ProtocolError::Truncated);
        }
        for _ in 0..count {
            item(self)?;
        }
        Ok(())
    }

    /// How many bytes are left to read.
    pub(super) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Everything that remains (for frames whose whole payload is one byte string).
    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Ends decoding: the payload must have been read to its last byte.
    pub(super) fn finish(self) -> Result<(), ProtocolError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(ProtocolError::TrailingBytes(n)),
        }
    }

    /// A `u32` length or count, as a `usize`.
    fn length(&mut self) -> Result<usize, ProtocolError> {
        // Only fails where usize is narrower than 32 bits; such a length cannot fit in memory.
        usize::try_from(self.u32()?).map_err(|_| ProtocolError::Truncated)
    }
}

/// Where a frame's fields are encoded to.
///
/// `Vec<u8>` appends the bytes; [`Count`] only adds up their number. Encoding goes through the
/// same code for both, so a frame's counted size is exactly the size of its encoding.
pub(super) trait Sink {
    /// Appends raw bytes.
    fn put(&mut self, bytes: &[u8]);

    /// One byte.
    fn put_u8(&mut self, value: u8) {
        self.put(&[value]);
    }

    /// A big-endian `u16`.
    fn put_u16(&mut self, value: u16) {
        self.put(&value.to_be_bytes());
    }

    /// A big-endian `u32`.
    fn put_u32(&mut self, value: u32) {
        self.put(&value.to_be_bytes());
    }

    /// A big-endian `i64`.
    fn put_i64(&mut self, value: i64) {
        self.put(&value.to_be_bytes());
    }

    /// A big-endian `u64`.
    fn put_u64(&mut self, value: u64) {
        self.put(&value.to_be_bytes());
    }

    /// A length or count. One beyond `u32::MAX` is written as `u32::MAX`: such a frame is far
    /// over [`super::MAX_PAYLOAD`], which `Frame::check` reports and every decoder refuses.
    fn put_len(&mut self, len: usize) {
        self.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    }

    /// A `bytes` field.
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.put_len(bytes.len());
        self.put(bytes);
    }

    /// A `str` field.
    fn put_str(&mut self, text: &str) {
        self.put_bytes(text.as_bytes());
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A [`Sink`] that only counts bytes (saturating, so it cannot overflow).
#[derive(Default)]
pub(super) struct Count(pub(super) usize);

impl Sink for Count {
    fn put(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_field_type() {
        let mut buf = Vec::new();
        buf.put_u8(7);
        buf.put_u16(0x1234);
        buf.put_u32(0xdead_beef);
        buf.put_i64(-2);
        buf.put_bytes(b"\xff\x00");
        buf.put_str("héllo");
        buf.put_len(2);
        buf.put_u8(1);
        buf.put_u8(2);
        buf.put(b"tail");

        let mut r = Reader::new(&buf);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u16(), Ok(0x1234));
        assert_eq!(r.u32(), Ok(0xdead_beef));
        assert_eq!(r.i64(), Ok(-2));
        assert_eq!(r.bytes(), Ok(&b"\xff\x00"[..]));
        assert_eq!(r.str(), Ok("héllo"));
        assert_eq!(r.list(1, Reader::u8), Ok(vec![1, 2]));
        assert_eq!(r.rest(), b"tail");
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn refuses_to_read_past_the_end() {
        assert_eq!(Reader::new(&[1]).u16(), Err(ProtocolError::Truncated));
        assert_eq!(Reader::new(&[0, 0, 0]).u32(), Err(ProtocolError::Truncated));
        assert_eq!(Reader::new(&[0; 7]).i64(), Err(ProtocolError::Truncated));
        // A length one past what remains.
        assert_eq!(
            Reader::new(&[0, 0, 0, 3, b'a', b'b']).bytes(),
            Err(ProtocolError::Truncated)
        );
        assert_eq!(
            Reader::new(&[0xff; 4]).bytes(),
            Err(ProtocolError::Truncated)
        );
    }

    #[test]
    fn refuses_a_count_the_payload_cannot_hold_before_allocating() {
        // u32::MAX items of at least 8 bytes each, with 8 bytes left: refused up front.
        let buf = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut calls = 0;
        let result = Reader::new(&buf).list(8, |r| {
            calls += 1;
            r.u32()
        });
        assert_eq!(result, Err(ProtocolError::Truncated));
        assert_eq!(calls, 0);
        // One item of 8 bytes fits exactly.
        assert_eq!(
            Reader::new(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]).list(8, Reader::i64),
            Ok(vec![0])
        );
    }

    #[test]
    fn invalid_utf8_and_trailing_bytes() {
        assert_eq!(
            Reader::new(&[0, 0, 0, 1, 0xc3]).str(),
            Err(ProtocolError::InvalidUtf8)
        );
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.finish(), Err(ProtocolError::TrailingBytes(2)));
    }

    #[test]
    fn count_matches_the_encoding() {
        let mut buf = Vec::new();
        let mut count = Count::default();
        for sink in [&mut buf as &mut dyn Sink, &mut count] {
            sink.put_u16(1);
            sink.put_bytes(b"abc");
            sink.put_i64(0);
        }
        assert_eq!(count.0, buf.len());
        assert_eq!(count.0, 2 + 4 + 3 + 8);
    }
}
