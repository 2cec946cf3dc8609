//! Small helpers for text people read: a count with its noun in the right number, a slot range.

/// `count(1, "host", "hosts")` is "1 host", `count(3, "host", "hosts")` "3 hosts" (and "0 hosts").
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The slots of a disk with `slot_count` slots, for messages: "8 slots, 0 to 7", "1 slot, slot 0".
pub fn slot_range(slot_count: u32) -> String {
    match slot_count {
        0 => "no slots".into(),
        1 => "1 slot, slot 0".into(),
        n => format!("{n} slots, 0 to {}", n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ranges() {
        assert_eq!(count(0, "host", "hosts"), "0 hosts");
        assert_eq!(count(1, "host", "hosts"), "1 host");
        assert_eq!(count(2, "VM", "VMs"), "2 VMs");
        assert_eq!(slot_range(8), "8 slots, 0 to 7");
        assert_eq!(slot_range(1), "1 slot, slot 0");
        assert_eq!(slot_range(0), "no slots");
    }
}
