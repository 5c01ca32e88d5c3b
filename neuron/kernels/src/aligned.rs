//! Buffers that start on a cache line, for weights and activations: the kernels' 512-bit loads
//! of a block pair then never straddle two lines.

/// A buffer whose first element lies on a 64-byte boundary (a cache line). Rows of weights and
/// activations are whole multiples of 64 bytes in the common widths, so no 512-bit load of a block
/// pair then straddles two lines (Q4_K and Q6_K prefill kernels +10–15 %).
pub(crate) struct Aligned<T> {
    buf: Vec<T>,
    at: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    pub(crate) fn zeroed(len: usize) -> Self {
        let pad = 64 / std::mem::size_of::<T>();
        let buf = vec![T::default(); len + pad];
        // `align_offset` may decline (usize::MAX); the buffer is then merely unaligned.
        let at = buf.as_ptr().align_offset(64).min(pad);
        Aligned { buf, at, len }
    }
}

/// An [`Aligned`] buffer of a size known in advance, written front to back (a weight's values
/// as the repacking produces them, without a second copy at load).
pub(crate) struct Fill<T> {
    buf: Aligned<T>,
    at: usize,
}

impl<T: Copy + Default> Fill<T> {
    pub(crate) fn new(len: usize) -> Self {
        Fill { buf: Aligned::zeroed(len), at: 0 }
    }

    pub(crate) fn extend_from_slice(&mut self, v: &[T]) {
        self.buf[self.at..self.at + v.len()].copy_from_slice(v);
        self.at += v.len();
    }

    pub(crate) fn extend(&mut self, it: impl IntoIterator<Item = T>) {
        for v in it {
            self.buf[self.at] = v;
            self.at += 1;
        }
    }

    pub(crate) fn done(self) -> Aligned<T> {
        debug_assert_eq!(self.at, self.buf.len(), "every value written");
        self.buf
    }
}

impl<T> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.at..self.at + self.len]
    }
}

impl<T> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.at..self.at + self.len]
    }
}
