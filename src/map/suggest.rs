//! "Did you mean ...?": the nearest of a few valid names to one that is not valid, for
//! mapping errors (keys, column names, call types, formats) and for mapped paths that
//! never matched a key of the data.
//!
//! Nearness is Jaro-Winkler similarity on the lowercased names (it favours a shared
//! start, which is how most typos and truncations look: `totl`, `user_idd`), with a floor
//! so that a name unlike all of them suggests nothing rather than a random one.

/// Similarity below which nothing is suggested.
const FLOOR: f64 = 0.8;

/// The candidate nearest to `word`, if any is near enough (and is not `word` itself).
pub fn nearest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let w = word.to_lowercase();
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        if c == word {
            continue;
        }
        let score = strsim::jaro_winkler(&w, &c.to_lowercase());
        if score >= FLOOR && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

/// ` (did you mean "x"?)`, or nothing.
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    nearest(word, candidates).map_or_else(String::new, |c| format!(" (did you mean \"{c}\"?)"))
}

/// Adds a suggestion to a serde message of the form ``unknown field `x`, expected one of
/// `a`, `b` `` (or `unknown variant`), which is how `deny_unknown_fields` and derived
/// enums word a typo; any other message comes back as it was.
pub fn annotate_serde_message(message: &str) -> String {
    for what in ["unknown field `", "unknown variant `"] {
        let Some(at) = message.find(what) else {
            continue;
        };
        let rest = &message[at + what.len()..];
        let Some(end) = rest.find('`') else {
            continue;
        };
        let word = &rest[..end];
        let Some(list_at) = rest.find("expected ") else {
            continue;
        };
        let list = &rest[list_at..];
        let line_end = list.find('\n').unwrap_or(list.len());
        let candidates: Vec<&str> = list[..line_end].split('`').skip(1).step_by(2).collect();
        if let Some(c) = nearest(word, candidates) {
            let insert = at + what.len() + list_at + line_end;
            return format!(
                "{}; did you mean `{c}`?{}",
                &message[..insert],
                &message[insert..]
            );
        }
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_and_truncations_suggest_the_nearest_name_and_strangers_nothing() {
        assert_eq!(nearest("totl", ["total", "tax", "items"]), Some("total"));
        assert_eq!(nearest("user_idd", ["user_id", "event"]), Some("user_id"));
        assert_eq!(
            nearest("Trak", ["identify", "track", "page"]),
            Some("track")
        );
        assert_eq!(nearest("zzz", ["total", "tax"]), None);
        assert_eq!(
            did_you_mean("flaot", ["float", "int"]),
            " (did you mean \"float\"?)"
        );
    }

    #[test]
    fn serde_unknown_field_messages_get_a_suggestion() {
        let m = "unknown field `user_idd`, expected one of `type`, `user_id`, `event`\n";
        assert_eq!(
            annotate_serde_message(m),
            "unknown field `user_idd`, expected one of `type`, `user_id`, `event`; did you mean `user_id`?\n"
        );
        let m = "unknown variant `flaot`, expected one of `auto`, `float`";
        assert!(annotate_serde_message(m).ends_with("did you mean `float`?"));
        assert_eq!(annotate_serde_message("other"), "other");
    }
}
