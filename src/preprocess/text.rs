//! Text → CLIP BPE token ids, `[77]` int64, as ImageBind's `SimpleTokenizer`:
//! html-unescape (twice), collapse whitespace, lowercase, CLIP word split, byte-level
//! BPE, `[SOT] + tokens[:76] + [EOT]`, zero padded (EOT always present).
//!
//! The BPE vocabulary and merges are OpenAI's `bpe_simple_vocab_16e6`, bundled by the
//! `instant-clip-tokenizer` crate.

use super::ModelInput;

pub const CONTEXT_LENGTH: usize = 77;
pub const SOT: i64 = 49406;
pub const EOT: i64 = 49407;

pub struct TextPrep {
    tok: instant_clip_tokenizer::Tokenizer,
}

impl Default for TextPrep {
    fn default() -> Self {
        Self::new()
    }
}

impl TextPrep {
    pub fn new() -> Self {
        TextPrep {
            tok: instant_clip_tokenizer::Tokenizer::new(),
        }
    }

    /// Token ids for one text, length 77.
    pub fn tokenize(&self, text: &str) -> Vec<i64> {
        let cleaned = whitespace_clean(&html_unescape(&html_unescape(text)));
        let mut toks = Vec::new();
        self.tok.encode(&cleaned, &mut toks);
        let mut ids = Vec::with_capacity(CONTEXT_LENGTH);
        ids.push(SOT);
        ids.extend(toks.iter().take(CONTEXT_LENGTH - 2).map(|t| t.to_u16() as i64));
        ids.push(EOT);
        ids.resize(CONTEXT_LENGTH, 0);
        ids
    }

    pub fn input(&self, text: &str) -> ModelInput {
        ModelInput::I64(self.tokenize(text))
    }
}

/// Collapse runs of whitespace to one space and trim.
pub fn whitespace_clean(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Python `html.unescape` for named entities in common use and numeric references.
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let end = rest[1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '#'))
            .map(|i| i + 1);
        let (name, consumed) = match end {
            Some(e) if rest[e..].starts_with(';') => (&rest[1..e], e + 1),
            Some(e) => (&rest[1..e], e),
            None => (&rest[1..], rest.len()),
        };
        let decoded = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ if name.starts_with("#x") || name.starts_with("#X") => {
                u32::from_str_radix(&name[2..], 16).ok().and_then(char::from_u32)
            }
            _ if name.starts_with('#') => name[1..].parse::<u32>().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) if !name.is_empty() => {
                out.push(c);
                rest = &rest[consumed..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids_and_layout() {
        let t = TextPrep::new();
        let ids = t.tokenize("a photo of a dog");
        // CLIP: "a"=320, "photo"=1125, "of"=539, "dog"=1929.
        assert_eq!(&ids[..7], &[SOT, 320, 1125, 539, 320, 1929, EOT]);
        assert_eq!(ids.len(), 77);
        assert!(ids[7..].iter().all(|&v| v == 0));
        assert_eq!(t.tokenize("  A   Photo of a DOG "), ids);
        assert_eq!(t.tokenize("a photo of a &amp;dog"), t.tokenize("a photo of a &dog"));
    }

    #[test]
    fn long_text_keeps_eot_last() {
        let t = TextPrep::new();
        let ids = t.tokenize(&"word ".repeat(200));
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[76], EOT);
        assert_eq!(ids[0], SOT);
    }

    #[test]
    fn unescape() {
        assert_eq!(
            html_unescape("a &lt;b&gt; &#39;c&#x27; &amp;amp; &bogus; &"),
            "a <b> 'c' &amp; &bogus; &"
        );
    }
}
