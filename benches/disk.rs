//! Disk benchmarks (placeholder; see docs/BENCHMARKS.md).
fn main() {}
