//! One sequence's KV cache, in blocks of [`BLOCK_TOKENS`] positions: what a later prefix cache
//! shares between sequences that begin alike. A cache's length moves only when a whole step has
//! written every layer, and it may be cut back to any position (a sequence may go back and
//! recompute from there). Two storages, one bookkeeping:
//!
//! - **host**: f32 keys and values for cortex's CPU decoder, each block holding every layer's
//!   rows for its positions, held by `Arc` so that blocks can be shared; a write into a shared
//!   block copies it first (`Arc::make_mut`), so the other holders keep their values. Row `j`
//!   lives in block `j / BLOCK_TOKENS` at slot `j % BLOCK_TOKENS`.
//! - **device**: per layer one contiguous `[1, kv heads, capacity, head_dim]` tensor pair on the
//!   batched decoder's device, grown in place (a GPU's attention needs contiguous keys and values
//!   and candle has no paged kernel); its blocks are the position ranges `b·B..(b+1)·B`, which a
//!   prefix cache copies device to device.

use std::ops::Range;
use std::sync::Arc;

use candle_core::{Result, Tensor};

/// Positions per block. A power of two (a row's block and slot are a shift and a mask). 16:
/// attention walking each block's rows as one slice timed the same over 1024 blocked positions
/// as over one contiguous buffer (SmolLM2's heads 152 against 164 µs a layer, Gemma 3's 161
/// against 159), so the block is as small as keeps that, which lets a prefix cache share more
/// of two prompts that part mid-block (vLLM's default is 16 too).
pub const BLOCK_TOKENS: usize = 16;
const _: () = assert!(BLOCK_TOKENS.is_power_of_two());

/// One sequence's keys and values; see the module's documentation.
#[derive(Default)]
pub struct KvCache {
    len: usize,
    store: Store,
}

#[derive(Default)]
enum Store {
    /// Nothing written yet: the first decoder to write picks the storage.
    #[default]
    Empty,
    Host(Host),
    Device(Vec<(Tensor, Tensor)>),
}

/// Host blocks of `layers` layers of rows `width` floats wide.
#[derive(Clone)]
struct Host {
    layers: usize,
    width: usize,
    blocks: Vec<Arc<Block>>,
}

/// Keys and values of [`BLOCK_TOKENS`] positions in every layer, `[layer][k, v][slot][width]`.
#[derive(Clone)]
pub struct Block(Box<[f32]>);

/// One sequence's share of a decoder's step: `tokens` at positions `pos..` against its `cache`
/// (`pos` at most the cache's length: a sequence may go back and recompute from there).
pub struct Part<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub pos: usize,
}

impl Part<'_> {
    /// Fails when the part has no tokens, reaches past the model's `positions`, or skips past
    /// its cache: what both decoders check for every part before any cache moves.
    pub fn check(&self, positions: usize) -> Result<()> {
        let (pos, t) = (self.pos, self.tokens.len());
        if t == 0 || pos + t > positions {
            candle_core::bail!("positions {pos}..{} are outside the model's {positions}", pos + t)
        }
        if pos > self.cache.len() {
            candle_core::bail!("position {pos} skips past the {} cached positions", self.cache.len())
        }
        Ok(())
    }
}

/// The keys or the values of one layer as attention reads them: each block's slab of
/// `BLOCK_TOKENS × width` floats.
pub struct LayerRows<'a> {
    slabs: Vec<&'a [f32]>,
    width: usize,
}

impl<'a> LayerRows<'a> {
    /// Rows held in one contiguous buffer, read as blocks (tests compare with candle's ops).
    #[cfg(test)]
    pub fn contiguous(data: &'a [f32], width: usize) -> Self {
        Self { slabs: data.chunks(BLOCK_TOKENS * width).collect(), width }
    }

    /// `len` floats from `offset` in position `j`'s row.
    #[inline]
    pub fn row(&self, j: usize, offset: usize, len: usize) -> &[f32] {
        let at = (j % BLOCK_TOKENS) * self.width + offset;
        &self.slabs[j / BLOCK_TOKENS][at..at + len]
    }

    /// Floats a row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The rows of positions `range`, block by block: each block's run of whole rows, one after
    /// another, in order. Attention's inner loops walk a run as one slice and look its block up
    /// once ([`LayerRows::row`] in those loops cost SmolLM2 a tenth of its decode speed at 1024
    /// positions).
    #[inline]
    pub fn runs(&self, range: Range<usize>) -> impl Iterator<Item = &[f32]> + '_ {
        let w = self.width;
        (range.start / BLOCK_TOKENS..range.end.div_ceil(BLOCK_TOKENS)).map(move |b| {
            let first = b * BLOCK_TOKENS;
            let (lo, hi) = (range.start.max(first) - first, range.end.min(first + BLOCK_TOKENS) - first);
            &self.slabs[b][lo * w..hi * w]
        })
    }
}

/// One full block of a cache, detached so that a prefix cache can keep it and hand it to other
/// sequences: host blocks by reference (a sequence that writes into one copies it first),
/// device blocks as their own `[1, kv heads, BLOCK_TOKENS, head_dim]` copies per layer.
#[derive(Clone)]
pub enum SharedBlock {
    Host { layers: usize, width: usize, block: Arc<Block> },
    Device(Arc<[(Tensor, Tensor)]>),
}

impl SharedBlock {
    /// Memory the block holds.
    pub fn bytes(&self) -> usize {
        match self {
            SharedBlock::Host { block, .. } => block.0.len() * std::mem::size_of::<f32>(),
            SharedBlock::Device(layers) => {
                layers.iter().map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes()).sum()
            }
        }
    }

    /// Holders of this block: the prefix cache and every sequence that shares it (host blocks;
    /// a device block is copied into each sequence, so only the cache holds it).
    pub fn holders(&self) -> usize {
        match self {
            SharedBlock::Host { block, .. } => Arc::strong_count(block),
            SharedBlock::Device(layers) => Arc::strong_count(layers),
        }
    }
}

impl KvCache {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Blocks the cached positions occupy (the last one possibly part full).
    pub fn blocks(&self) -> usize {
        self.len.div_ceil(BLOCK_TOKENS)
    }

    /// The positions block `b` holds.
    pub fn block_positions(&self, b: usize) -> Range<usize> {
        (b * BLOCK_TOKENS).min(self.len)..((b + 1) * BLOCK_TOKENS).min(self.len)
    }

    /// Forgets positions `pos..`; a step then writes from `pos`. Fails when `pos` skips past
    /// the cached positions.
    pub fn truncate(&mut self, pos: usize) -> Result<()> {
        if pos > self.len {
            candle_core::bail!("position {pos} skips past the {} cached positions", self.len)
        }
        if let Store::Host(h) = &mut self.store {
            h.blocks.truncate(pos.div_ceil(BLOCK_TOKENS));
        }
        self.len = pos;
        Ok(())
    }

    /// Makes the `t` rows a step wrote after the cached positions, in every layer, part of the
    /// cache.
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Another cache with the same contents: host blocks shared (copied when either writes
    /// into one), device tensors copied.
    pub fn fork(&self) -> Result<KvCache> {
        let store = match &self.store {
            Store::Empty => Store::Empty,
            Store::Host(h) => Store::Host(h.clone()),
            Store::Device(layers) => {
                Store::Device(layers.iter().map(|(k, v)| Ok((k.copy()?, v.copy()?))).collect::<Result<_>>()?)
            }
        };
        Ok(KvCache { len: self.len, store })
    }

    /// Block `b`, which must be full, detached for a prefix cache (see [`SharedBlock`]).
    pub fn share_block(&self, b: usize) -> Result<SharedBlock> {
        if (b + 1) * BLOCK_TOKENS > self.len {
            candle_core::bail!("block {b} is not full")
        }
        match &self.store {
            Store::Empty => candle_core::bail!("an empty cache"),
            Store::Host(h) => Ok(SharedBlock::Host { layers: h.layers, width: h.width, block: h.blocks[b].clone() }),
            Store::Device(layers) => {
                let part = |t: &Tensor| t.narrow(2, b * BLOCK_TOKENS, BLOCK_TOKENS)?.copy();
                Ok(SharedBlock::Device(layers.iter().map(|(k, v)| Ok((part(k)?, part(v)?))).collect::<Result<_>>()?))
            }
        }
    }

    /// A cache holding `blocks` (consecutive, from position 0, all of one storage) cut to
    /// `len` positions, from which a sequence continues: host blocks shared, device blocks
    /// copied into contiguous per-layer tensors.
    pub fn from_blocks(blocks: &[SharedBlock], len: usize) -> Result<KvCache> {
        if len > blocks.len() * BLOCK_TOKENS {
            candle_core::bail!("{len} positions from {} blocks", blocks.len())
        }
        let store = match blocks.first() {
            None => Store::Empty,
            Some(SharedBlock::Host { layers, width, .. }) => {
                let (layers, width) = (*layers, *width);
                let blocks = blocks
                    .iter()
                    .map(|b| match b {
                        SharedBlock::Host { layers: l, width: w, block } if (*l, *w) == (layers, width) => {
                            Ok(block.clone())
                        }
                        _ => candle_core::bail!("blocks of different shapes"),
                    })
                    .collect::<Result<_>>()?;
                Store::Host(Host { layers, width, blocks })
            }
            Some(SharedBlock::Device(first)) => {
                let device: Vec<&[(Tensor, Tensor)]> = blocks
                    .iter()
                    .map(|b| match b {
                        SharedBlock::Device(l) if l.len() == first.len() => Ok(&l[..]),
                        _ => candle_core::bail!("blocks of different shapes"),
                    })
                    .collect::<Result<_>>()?;
                let layer = |l: usize| -> Result<(Tensor, Tensor)> {
                    let ks: Vec<&Tensor> = device.iter().map(|b| &b[l].0).collect();
                    let vs: Vec<&Tensor> = device.iter().map(|b| &b[l].1).collect();
                    Ok((Tensor::cat(&ks, 2)?, Tensor::cat(&vs, 2)?))
                };
                Store::Device((0..first.len()).map(layer).collect::<Result<_>>()?)
            }
        };
        let mut cache = KvCache { len: blocks.len() * BLOCK_TOKENS, store };
        cache.truncate(len)?;
        Ok(cache)
    }

    /// Host storage of `layers` layers of `width` floats a row, with blocks for positions up
    /// to `end`. Fails on a cache another kind of decoder wrote.
    fn host(&mut self, layers: usize, width: usize, end: usize) -> Result<&mut Host> {
        if matches!(self.store, Store::Empty) {
            self.store = Store::Host(Host { layers, width, blocks: Vec::new() });
        }
        let Store::Host(h) = &mut self.store else { candle_core::bail!("this cache holds device tensors") };
        if (h.layers, h.width) != (layers, width) {
            candle_core::bail!("this cache holds {} layers of {} wide rows", h.layers, h.width)
        }
        while h.blocks.len() * BLOCK_TOKENS < end {
            h.blocks.push(Arc::new(Block(vec![0f32; layers * 2 * BLOCK_TOKENS * width].into_boxed_slice())));
        }
        Ok(h)
    }

    /// Makes room in host storage for a step of `t` rows after the cached positions.
    pub fn reserve_host(&mut self, layers: usize, width: usize, t: usize) -> Result<()> {
        self.host(layers, width, self.len + t).map(|_| ())
    }

    /// Writes a step's rows of `layer` (`k` and `v`, each rows × width) after the cached
    /// positions; [`KvCache::reserve_host`] made room. A shared block is copied first.
    pub fn write_host(&mut self, layer: usize, k: &[f32], v: &[f32]) -> Result<()> {
        let len = self.len;
        let Store::Host(h) = &mut self.store else { candle_core::bail!("no host storage reserved") };
        let w = h.width;
        if layer >= h.layers || k.len() != v.len() || len + k.len() / w > h.blocks.len() * BLOCK_TOKENS {
            candle_core::bail!("rows outside the reserved cache")
        }
        for (r, (kr, vr)) in k.chunks_exact(w).zip(v.chunks_exact(w)).enumerate() {
            let (b, slot) = ((len + r) / BLOCK_TOKENS, (len + r) % BLOCK_TOKENS);
            let block = &mut Arc::make_mut(&mut h.blocks[b]).0;
            let at = |kv: usize| ((layer * 2 + kv) * BLOCK_TOKENS + slot) * w;
            block[at(0)..at(0) + w].copy_from_slice(kr);
            block[at(1)..at(1) + w].copy_from_slice(vr);
        }
        Ok(())
    }

    /// Asks the CPU to bring layer `layer`'s cached keys and values (positions `..end`, at
    /// most `max_bytes` of them, from the start) into its L2. Attention reads each kv head's
    /// slice of every row, a short strided walk per item that keeps few loads in flight, and
    /// found them in memory: the weights streamed since the last step evict them. A hint: it
    /// reads nothing and cannot fault.
    pub fn prefetch_host(&self, layer: usize, end: usize, max_bytes: usize) {
        let Store::Host(h) = &self.store else { return };
        if layer >= h.layers {
            return;
        }
        let size = BLOCK_TOKENS * h.width;
        let mut left = [max_bytes / 2 / std::mem::size_of::<f32>(); 2];
        for (b, block) in h.blocks.iter().enumerate().take(end.div_ceil(BLOCK_TOKENS)) {
            let rows = (end - b * BLOCK_TOKENS).min(BLOCK_TOKENS);
            for (kv, left) in left.iter_mut().enumerate() {
                let slab = &block.0[(layer * 2 + kv) * size..][..(rows * h.width).min(*left)];
                *left -= slab.len();
                prefetch::<L2>(slab);
            }
            if left == [0, 0] {
                break;
            }
        }
    }

    /// Layer `layer`'s keys and values as attention reads them, through position `end`
    /// (the rows a step wrote included).
    pub fn host_rows(&self, layer: usize, end: usize) -> Result<(LayerRows<'_>, LayerRows<'_>)> {
        let Store::Host(h) = &self.store else { candle_core::bail!("no host storage") };
        let n = end.div_ceil(BLOCK_TOKENS);
        if layer >= h.layers || n > h.blocks.len() {
            candle_core::bail!("rows outside the cache")
        }
        let size = BLOCK_TOKENS * h.width;
        let rows = |kv: usize| LayerRows {
            slabs: h.blocks[..n].iter().map(|b| &b.0[(layer * 2 + kv) * size..(layer * 2 + kv + 1) * size]).collect(),
            width: h.width,
        };
        Ok((rows(0), rows(1)))
    }

    /// Writes a step's `k` and `v` (`[1, kv heads, t, head_dim]`) of `layer` into device storage
    /// after the cached positions and returns the keys and values of every position through
    /// them. The first layer's first step allocates; a full tensor doubles, up to `limit`
    /// positions (a long generation copies its cache log(n) times).
    pub fn write_device(&mut self, layer: usize, k: &Tensor, v: &Tensor, limit: usize) -> Result<(Tensor, Tensor)> {
        let (pos, t) = (self.len, k.dim(2)?);
        let need = pos + t;
        if matches!(self.store, Store::Empty) {
            self.store = Store::Device(Vec::new());
        }
        let Store::Device(layers) = &mut self.store else { candle_core::bail!("this cache holds host blocks") };
        if layer == layers.len() {
            let mut shape = k.dims().to_vec();
            shape[2] = need.next_power_of_two().max(256).min(limit.max(need));
            let zeros = || Tensor::zeros(shape.as_slice(), k.dtype(), k.device());
            layers.push((zeros()?, zeros()?));
        }
        let Some((kc, vc)) = layers.get_mut(layer) else { candle_core::bail!("layer {layer} written out of order") };
        let cap = kc.dim(2)?;
        if need > cap {
            let grown = need.next_power_of_two().min(limit.max(need));
            let grow = |c: &Tensor| -> Result<Tensor> {
                let mut shape = c.dims().to_vec();
                shape[2] = grown - cap;
                Tensor::cat(&[c, &Tensor::zeros(shape.as_slice(), c.dtype(), c.device())?], 2)
            };
            *kc = grow(kc)?;
            *vc = grow(vc)?;
        }
        kc.slice_set(k, 2, pos)?;
        vc.slice_set(v, 2, pos)?;
        Ok((kc.narrow(2, 0, need)?, vc.narrow(2, 0, need)?))
    }
}

/// [`prefetch`] hints: into L1 (`_MM_HINT_T0`) or L2 (`_MM_HINT_T1`).
pub(crate) const L1: i32 = 3;
pub(crate) const L2: i32 = 2;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(L1 == std::arch::x86_64::_MM_HINT_T0 && L2 == std::arch::x86_64::_MM_HINT_T1);

/// Asks the CPU for every cache line of `data`, into the cache `HINT` names (x86; elsewhere
/// nothing).
#[inline]
pub(crate) fn prefetch<const HINT: i32>(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(16) {
        // SAFETY: a prefetch hint reads nothing and cannot fault; the address is in `data`.
        unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    const LAYERS: usize = 3;
    const WIDTH: usize = 4;

    /// Row `p` of layer `l`: keys `p·100 + l·10 + i`, values their negatives.
    fn rows(l: usize, ps: Range<usize>) -> (Vec<f32>, Vec<f32>) {
        let k: Vec<f32> = ps.flat_map(|p| (0..WIDTH).map(move |i| (p * 100 + l * 10 + i) as f32)).collect();
        let v = k.iter().map(|x| -x).collect();
        (k, v)
    }

    /// A step of positions `ps` through every layer.
    fn step(c: &mut KvCache, ps: Range<usize>) {
        c.truncate(ps.start).unwrap();
        c.reserve_host(LAYERS, WIDTH, ps.len()).unwrap();
        for l in 0..LAYERS {
            let (k, v) = rows(l, ps.clone());
            c.write_host(l, &k, &v).unwrap();
        }
        c.advance(ps.len());
    }

    /// Every cached row reads back as written.
    fn check(c: &KvCache) {
        for l in 0..LAYERS {
            let (k, v) = c.host_rows(l, c.len()).unwrap();
            let (wk, wv) = rows(l, 0..c.len());
            for j in 0..c.len() {
                assert_eq!(k.row(j, 0, WIDTH), &wk[j * WIDTH..(j + 1) * WIDTH], "key {j} of layer {l}");
                assert_eq!(v.row(j, 1, 2), &wv[j * WIDTH + 1..j * WIDTH + 3], "value {j} of layer {l}");
            }
            // Runs of rows, across blocks and within one, read as the rows one by one.
            let n = c.len();
            for range in [0..n, 3..n, 1..BLOCK_TOKENS.min(n), n / 2..n / 2, n - 1..n] {
                let runs: Vec<f32> = v.runs(range.clone()).flatten().copied().collect();
                let one: Vec<f32> = range.flat_map(|j| v.row(j, 0, WIDTH)).copied().collect();
                assert_eq!(runs, one);
            }
        }
    }

    #[test]
    fn rows_appended_across_block_boundaries_read_back() {
        let mut c = KvCache::default();
        let b = BLOCK_TOKENS;
        // A prompt that ends mid-block, decode rows across the boundary, a chunk of two blocks.
        step(&mut c, 0..b - 2);
        for p in b - 2..b + 2 {
            step(&mut c, p..p + 1);
        }
        step(&mut c, b + 2..3 * b + 2);
        assert_eq!((c.len(), c.blocks()), (3 * b + 2, 4));
        assert_eq!(c.block_positions(3), 3 * b..3 * b + 2);
        check(&c);
        assert!(c.truncate(3 * b + 3).is_err(), "a position past the cache");
    }

    #[test]
    fn a_rewind_into_the_middle_of_a_block_recomputes_from_there() {
        let mut c = KvCache::default();
        step(&mut c, 0..2 * BLOCK_TOKENS + 5);
        let at = BLOCK_TOKENS + 3;
        c.truncate(at).unwrap();
        assert_eq!((c.len(), c.blocks()), (at, 2));
        // Different values at the rewound positions, then the same ones again.
        c.reserve_host(LAYERS, WIDTH, 4).unwrap();
        c.write_host(0, &[7.0; 4 * WIDTH], &[7.0; 4 * WIDTH]).unwrap();
        step(&mut c, at..at + 4);
        check(&c);
    }

    #[test]
    fn a_shared_block_is_copied_on_write() {
        let mut a = KvCache::default();
        step(&mut a, 0..BLOCK_TOKENS + 4);
        let mut b = a.fork().unwrap();
        // b goes back into the shared first block and writes other values there.
        b.truncate(5).unwrap();
        b.reserve_host(LAYERS, WIDTH, 2).unwrap();
        for l in 0..LAYERS {
            b.write_host(l, &[1.0; 2 * WIDTH], &[2.0; 2 * WIDTH]).unwrap();
        }
        b.advance(2);
        check(&a);
        let (k, v) = b.host_rows(2, 7).unwrap();
        assert_eq!((k.row(5, 0, WIDTH), v.row(6, 0, WIDTH)), (&[1.0; WIDTH][..], &[2.0; WIDTH][..]));
        assert_eq!(k.row(4, 0, 1), [402.0 + 20.0 - 2.0], "rows before the rewind are a's");
        // And a's writes leave b's rows alone.
        step(&mut a, 3..4);
        assert_eq!(b.host_rows(2, 7).unwrap().0.row(6, 0, WIDTH), &[1.0; WIDTH]);
    }

    #[test]
    fn device_storage_grows_in_place_and_keeps_its_rows() {
        let mut c = KvCache::default();
        let dev = Device::Cpu;
        let rows = |ps: Range<usize>| {
            let data: Vec<f32> = ps.clone().flat_map(|p| [p as f32, -(p as f32)]).collect();
            // [1, 1 kv head, t, head_dim 2]
            Tensor::from_vec(data, (1, 1, ps.len(), 2), &dev).unwrap()
        };
        for ps in [0..300, 300..301, 301..600] {
            c.truncate(ps.start).unwrap();
            let (k, _) = c.write_device(0, &rows(ps.clone()), &rows(ps.clone()), 4096).unwrap();
            assert_eq!(k.dims(), [1, 1, ps.end, 2]);
            c.advance(ps.len());
        }
        let (k, _) = {
            c.truncate(599).unwrap();
            c.write_device(0, &rows(599..600), &rows(599..600), 4096).unwrap()
        };
        let k: Vec<f32> = k.flatten_all().unwrap().to_vec1().unwrap();
        assert!(k.chunks(2).enumerate().all(|(p, r)| r == [p as f32, -(p as f32)]));
        assert!(c.host_rows(0, 1).is_err() && c.reserve_host(1, 2, 1).is_err(), "one storage a cache");
        let f = c.fork().unwrap();
        assert_eq!((f.len(), f.blocks()), (599, 599usize.div_ceil(BLOCK_TOKENS)));
    }
}
