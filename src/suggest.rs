//! "Did you mean …?" for a name that is close to one that exists (an environment, a key).

/// The known name closest to `given`, when it is close enough to be what was meant.
pub(crate) fn closest<'a>(
    given: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(given, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// `; did you mean `x`?` when a known name is close to `given`, else nothing.
pub(crate) fn did_you_mean<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    closest(given, known).map_or_else(String::new, |k| format!("; did you mean `{k}`?"))
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn a_near_miss_finds_its_name_and_a_stranger_finds_none() {
        let known = ["local", "staging", "production"];
        assert_eq!(closest("prodution", known), Some("production"));
        assert_eq!(closest("lcoal", known), Some("local"));
        assert_eq!(closest("stagign", known), Some("staging"));
        assert_eq!(closest("nope", known), None);
        assert_eq!(closest("x", known), None);
    }
}
