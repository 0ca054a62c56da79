//! Little-endian fields read from a byte slice; None once it runs out, so
//! a torn or damaged record is seen, never read past.

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

macro_rules! read_le {
    ($name:ident, $t:ty) => {
        pub(crate) fn $name(&mut self) -> Option<$t> {
            const N: usize = std::mem::size_of::<$t>();
            let b = self.bytes.get(self.at..self.at + N)?;
            self.at += N;
            Some(<$t>::from_le_bytes(b.try_into().ok()?))
        }
    };
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    read_le!(u8, u8);
    read_le!(u16, u16);
    read_le!(i16, i16);
    read_le!(u32, u32);
    read_le!(u64, u64);
    read_le!(i64, i64);
    read_le!(f64, f64);

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.bytes.get(self.at..self.at + n)?;
        self.at += n;
        Some(b)
    }

    pub(crate) fn position(&self) -> usize {
        self.at
    }

    pub(crate) fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }
}
