//! O_DIRECT I/O engines.
