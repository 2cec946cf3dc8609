//! Page-aligned buffers for O_DIRECT, allocated once (anonymous mmap) and reused.

use memmap2::MmapMut;

/// A zero-initialised, page-aligned buffer. Page alignment satisfies every O_DIRECT alignment.
pub struct AlignedBuf {
    map: MmapMut,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> std::io::Result<AlignedBuf> {
        assert!(len > 0, "empty buffer");
        let map = MmapMut::map_anon(len)?;
        assert_eq!(map.as_ptr() as usize % 4096, 0, "anonymous mappings are page aligned");
        Ok(AlignedBuf { map, len })
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.map[..self.len]
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map[..self.len]
    }
    pub fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
}
