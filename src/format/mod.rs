//! On-disk format v1 (see docs/FORMAT.md).
