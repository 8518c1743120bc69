//! Names that become bus key chunks: robot ids, source ids, query ids.

/// Check one key-expression chunk (robot id, source id, query id): 1–64 of
/// `[A-Za-z0-9_-]`.
pub fn validate_chunk(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err(format!("`{}` must be 1 to 64 characters", clip(s, 80)));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "`{}` contains `{c}`; only letters, digits, `-` and `_` are allowed",
            clip(s, 80)
        ));
    }
    Ok(())
}

/// Text taken from input (a file line, a bus payload), cut for a log line or an
/// error message: at most `max` characters, with the original length noted.
pub fn clip(s: &str, max: usize) -> String {
    let mut it = s.char_indices();
    match it.nth(max) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_clipping() {
        assert!(validate_chunk("ok-1_a").is_ok());
        assert!(validate_chunk("bad/id").is_err());
        assert!(validate_chunk("").is_err());
        assert_eq!(clip("abc", 3), "abc");
        let long = "é".repeat(50_000);
        let c = clip(&long, 10);
        assert!(c.starts_with("éééééééééé…") && c.ends_with("(100000 bytes)"), "{c}");
        assert!(validate_chunk(&"x/".repeat(100_000)).unwrap_err().len() < 200);
    }
}
