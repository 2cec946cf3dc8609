//! Timing derived from one base timeout (placeholder, filled in by the format/engine work).
