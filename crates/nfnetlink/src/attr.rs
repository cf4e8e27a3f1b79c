//! Netlink attributes (TLVs): a builder for nested attributes and a small parser.

/// `NLA_F_NESTED`: set on attributes that contain attributes.
pub const NLA_F_NESTED: u16 = 0x8000;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds the attributes of one message body.
#[derive(Clone, Debug, Default)]
pub struct Attrs {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl Attrs {
    pub fn new() -> Attrs {
        Attrs::default()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        debug_assert!(self.open.is_empty(), "unclosed nested attribute");
        self.buf
    }

    /// One attribute with a raw payload.
    pub fn put(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// A NUL-terminated string.
    pub fn put_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(kind, &v)
    }

    /// A big-endian u32 (nf_tables' integers are network byte order).
    pub fn put_be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }

    pub fn put_be64(&mut self, kind: u16, v: u64) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }

    /// Opens a nested attribute; close it with [`Attrs::end`].
    pub fn begin(&mut self, kind: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end(&mut self) -> &mut Self {
        let start = self.open.pop().expect("end() without begin()");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// A nested attribute built by `f`.
    pub fn nested(&mut self, kind: u16, f: impl FnOnce(&mut Attrs)) -> &mut Self {
        self.begin(kind);
        f(self);
        self.end()
    }
}

/// Iterates over the attributes in `buf`: (type without flags, payload).
pub fn parse(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= buf.len() {
        let len = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & 0x3fff;
        if len < 4 || off + len > buf.len() {
            break;
        }
        out.push((kind, &buf[off + 4..off + len]));
        off += align4(len);
    }
    out
}

/// The payload of the first attribute of `kind`.
pub fn find(buf: &[u8], kind: u16) -> Option<&[u8]> {
    parse(buf).into_iter().find(|(k, _)| *k == kind).map(|(_, v)| v)
}

pub fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

pub fn be64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

pub fn string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_lengths_and_padding() {
        let mut a = Attrs::new();
        a.put_str(1, "q").nested(4, |n| {
            n.put_be32(1, 2).put_be32(2, 0);
        });
        let b = a.into_bytes();
        // "q\0" padded to 4: 8 bytes; nested: 4 + 8 + 8 = 20.
        assert_eq!(b.len(), 28);
        let top = parse(&b);
        assert_eq!(top[0], (1, &b"q\0"[..]));
        assert_eq!(top[1].0, 4);
        let inner = parse(top[1].1);
        assert_eq!(be32(inner[0].1), Some(2));
        assert_eq!(u16::from_ne_bytes([b[10], b[11]]) & NLA_F_NESTED, NLA_F_NESTED);
    }
}
