//! How durations and sizes are written for humans and in reports.

/// Milliseconds, for events.
pub(crate) fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A list for one line: all of it when short, else the first three and the last two with
/// how many are left out and `where_all` (where the whole list is).
pub(crate) fn summarise(items: &[String], where_all: &str) -> String {
    const HEAD: usize = 3;
    const TAIL: usize = 2;
    if items.len() <= HEAD + TAIL + 1 {
        return items.join(", ");
    }
    format!(
        "{}, ... {} more ..., {} ({where_all})",
        items[..HEAD].join(", "),
        items.len() - HEAD - TAIL,
        items[items.len() - TAIL..].join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::summarise;

    #[test]
    fn a_long_list_keeps_its_ends_and_says_how_many_are_left_out() {
        let items: Vec<String> = (1..=40).map(|i| format!("m{i}")).collect();
        assert_eq!(
            summarise(&items, "see the plan"),
            "m1, m2, m3, ... 35 more ..., m39, m40 (see the plan)"
        );
        assert_eq!(summarise(&items[..6], "x"), "m1, m2, m3, m4, m5, m6");
    }
}
