//! Text → CLIP BPE token ids, `[77]` int64, as ImageBind's `SimpleTokenizer`
//! (`imagebind/models/multimodal_preprocessors.py`): `basic_clean` (ftfy `fix_text`,
//! `html.unescape` twice, strip), `whitespace_clean`, `lower()`, the CLIP word regex,
//! byte-level BPE, then `[SOT] + tokens[:76] + [EOT]` zero padded to 77 (EOT always
//! present).
//!
//! The BPE vocabulary, merges and word regex are OpenAI's `bpe_simple_vocab_16e6`,
//! bundled by the `instant-clip-tokenizer` crate; the cleaning steps are ours
//! ([`ftfy_fix_text`] covers ftfy's default fixes except mojibake repair).

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
        let cleaned = whitespace_clean(html_unescape(&html_unescape(&ftfy_fix_text(text))).trim());
        let lowered = python_lower(&cleaned);
        let mut toks = Vec::new();
        self.tok.encode(&lowered, &mut toks);
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

/// Python's `str.lower()`, which ImageBind applies after cleaning: the full Unicode
/// lowercase mapping (`İ` → `i̇`, two characters) plus the one conditional rule CPython
/// implements, Final_Sigma: `Σ` → `ς` when preceded by a cased letter and not followed
/// by one, case-ignorable characters skipped on both sides (`"ΟΔΟΣ."` → `"οδος."`), else
/// `σ`. Rust's `str::to_lowercase` implements the same mapping and the same Final_Sigma
/// definition (CPython's `handle_capital_sigma`); only the Unicode data version differs
/// (characters assigned or re-categorised after the Python build's Unicode version).
pub fn python_lower(s: &str) -> String {
    s.to_lowercase()
}

/// The byte a character stands for in "sloppy" Windows-1252 (Latin-1 where 1252 has
/// no character), as ftfy decodes mojibake.
fn cp1252_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 0x80 || (0xa0..=0xff).contains(&u) || (0x80..=0x9f).contains(&u) {
        return Some(u as u8);
    }
    Some(match c {
        '€' => 0x80,
        '‚' => 0x82,
        'ƒ' => 0x83,
        '„' => 0x84,
        '…' => 0x85,
        '†' => 0x86,
        '‡' => 0x87,
        'ˆ' => 0x88,
        '‰' => 0x89,
        'Š' => 0x8a,
        '‹' => 0x8b,
        'Œ' => 0x8c,
        'Ž' => 0x8e,
        '‘' => 0x91,
        '’' => 0x92,
        '“' => 0x93,
        '”' => 0x94,
        '•' => 0x95,
        '–' => 0x96,
        '—' => 0x97,
        '˜' => 0x98,
        '™' => 0x99,
        'š' => 0x9a,
        '›' => 0x9b,
        'œ' => 0x9c,
        'ž' => 0x9e,
        'Ÿ' => 0x9f,
        _ => return None,
    })
}

/// ftfy's `fix_encoding` for the common case: UTF-8 that was decoded as
/// Windows-1252 ("doesnâ€™t" → "doesn’t"). Each maximal run of characters that map
/// to single bytes and include a non-ASCII one is re-decoded as UTF-8 when that
/// succeeds; anything else (real Latin-1 text such as "café") is left alone.
pub fn fix_mojibake(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut run: Vec<u8> = Vec::new();
    let mut run_text = String::new();
    let flush = |run: &mut Vec<u8>, run_text: &mut String, out: &mut String| {
        match std::str::from_utf8(run) {
            Ok(fixed) if !run.is_ascii() => out.push_str(fixed),
            _ => out.push_str(run_text),
        }
        run.clear();
        run_text.clear();
    };
    for c in s.chars() {
        match cp1252_byte(c) {
            Some(b) => {
                run.push(b);
                run_text.push(c);
            }
            None => {
                flush(&mut run, &mut run_text, &mut out);
                out.push(c);
            }
        }
    }
    flush(&mut run, &mut run_text, &mut out);
    out
}

/// The fixes ftfy's `fix_text` applies by default that matter for captions and
/// prompts: mojibake repair for UTF-8 read as Windows-1252 ([`fix_mojibake`]), line
/// breaks unified, control characters removed, curly quotes uncurled, Latin
/// ligatures split, full-width characters narrowed, then NFC.
pub fn ftfy_fix_text(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let s = fix_mojibake(s);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            '\u{2028}' | '\u{2029}' | '\u{85}' => out.push('\n'),
            // remove_control_chars (keeps \t and \n)
            '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}' => {}
            '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}' => {}
            '\u{e0000}'..='\u{e007f}' => {}
            // uncurl_quotes
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => out.push('\''),
            '\u{201c}'..='\u{201f}' => out.push('"'),
            // fix_latin_ligatures
            'Ĳ' | 'ĳ' | 'ŉ' | 'Ǆ' | 'ǅ' | 'ǆ' | 'Ǉ' | 'ǈ' | 'ǉ' | 'Ǌ' | 'ǋ' | 'ǌ' | 'Ǳ' | 'ǲ' | 'ǳ' | 'ﬀ'..='ﬆ' => {
                out.extend(c.to_string().nfkc())
            }
            // fix_character_width: full-width ASCII and the ideographic space
            '\u{3000}' => out.push(' '),
            '\u{ff01}'..='\u{ff5e}' => out.push(char::from_u32(c as u32 - 0xff01 + 0x21).unwrap_or(c)),
            _ => out.push(c),
        }
    }
    out.nfc().collect()
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
    fn ftfy_subset() {
        assert_eq!(ftfy_fix_text("“Hi” ‘there’"), "\"Hi\" 'there'");
        assert_eq!(ftfy_fix_text("ﬁne ＡＢＣ１"), "fine ABC1");
        assert_eq!(ftfy_fix_text("a\r\nb\u{7}c\u{feff}"), "a\nbc");
        assert_eq!(ftfy_fix_text("e\u{301}"), "é");
        assert_eq!(ftfy_fix_text("doesnâ€™t cafÃ©"), "doesn't café");
        assert_eq!(ftfy_fix_text("café naïve"), "café naïve");
    }

    #[test]
    fn greek_lowercase_like_python() {
        let t = TextPrep::new();
        // Python: "ΟΔΟΣ".lower() == "οδος" (word-final sigma).
        assert_eq!(t.tokenize("ΟΔΟΣ"), t.tokenize("οδος"));
        assert_ne!(t.tokenize("ΟΔΟΣ"), t.tokenize("οδοσ"));
        assert_eq!(t.tokenize("ΛΌΓΟΣ ΣΟΦΊΑΣ."), t.tokenize("λόγος σοφίας."));
    }

    /// `(input, input.lower())`, the right-hand sides printed by CPython 3.11.7
    /// (Unicode 14.0.0) with `python3 -c 'print(repr(s.lower()))'`: Final_Sigma in every
    /// context (case-ignorable apostrophe, colon, period, combining marks, soft hyphen,
    /// ZWJ, modifier letters on either side; digits, CJK and emoji neither cased nor
    /// case-ignorable; titlecase and non-Greek cased letters), and the unconditional
    /// special mappings (İ → i + U+0307, Ω, K, ẞ, titlecase digraphs, Cherokee, ...).
    #[test]
    fn lowercase_table_from_python() {
        let table: &[(&str, &str)] = &[
            ("ΟΔΟΣ", "οδος"),
            ("ΟΔΟΣ.", "οδος."),
            ("ΟΔΟΣ.ΟΔΟΣ", "οδοσ.οδος"),
            ("ΟΔΟΣ ΟΔΟΣ", "οδος οδος"),
            ("Σ", "σ"),
            ("ΣΣ", "σς"),
            ("ΣΣΣ", "σσς"),
            (" Σ ", " σ "),
            ("Σ Α", "σ α"),
            ("Α Σ", "α σ"),
            ("ΑΣ Β", "ας β"),
            ("ΑΣ'Β", "ασ'β"),
            ("ΑΣ'", "ας'"),
            ("Α'Σ", "α'ς"),
            ("ΑΣ:Β", "ασ:β"),
            ("ΑΣ\u{301}", "ας\u{301}"),
            ("ΑΣ\u{301}Β", "ασ\u{301}β"),
            ("Α\u{301}Σ", "α\u{301}ς"),
            ("\u{301}Σ", "\u{301}σ"),
            ("ΑΣ\u{ad}", "ας\u{ad}"),
            ("ΑΣ\u{ad}Β", "ασ\u{ad}β"),
            ("ΑΣ\u{200d}", "ας\u{200d}"),
            ("ΑΣʰ", "αςʰ"),
            ("ʰΣ", "ʰσ"),
            ("ΑΣ\u{345}", "ας\u{345}"),
            ("ΑΣ\u{345}Β", "ασ\u{345}β"),
            ("AΣ", "aς"),
            ("aΣb", "aσb"),
            ("1Σ", "1σ"),
            ("Σ1", "σ1"),
            ("Α1Σ", "α1σ"),
            ("ΑΣ1", "ας1"),
            ("ΑΣ𝐀", "ασ𝐀"),
            ("𝐀Σ", "𝐀ς"),
            ("ΑΣ中", "ας中"),
            ("中Σ", "中σ"),
            ("ǅΣ", "ǆς"),
            ("ΣǅΑ", "σǆα"),
            ("ᾼΣ", "ᾳς"),
            ("ΑΣᾼ", "ασᾳ"),
            ("ΑΣ\u{1f600}", "ας\u{1f600}"),
            ("ΑΣ\u{1f3fd}", "ας\u{1f3fd}"),
            ("ΑΣ\u{301}\u{301}Β", "ασ\u{301}\u{301}β"),
            ("ΑΣ\u{301}\u{301}", "ας\u{301}\u{301}"),
            ("ΑΣ\u{301} ", "ας\u{301} "),
            ("ΟΔΥΣΣΕΥΣ", "οδυσσευς"),
            ("ὈΔΥΣΣΕΎΣ", "ὀδυσσεύς"),
            ("ΣΊΣΥΦΟΣ.", "σίσυφος."),
            ("Ελληνικά ΛΌΓΟΣ", "ελληνικά λόγος"),
            ("dog ΑΣ cat", "dog ας cat"),
            ("İSTANBUL", "i\u{307}stanbul"),
            ("İ", "i\u{307}"),
            ("i\u{307}", "i\u{307}"),
            ("I", "i"),
            ("ı", "ı"),
            ("ẞ", "ß"),
            ("ß", "ß"),
            ("Ω", "ω"),
            ("K", "k"),
            ("Å", "å"),
            ("ϴ", "θ"),
            ("ᾈ", "ᾀ"),
            ("ᾼ", "ᾳ"),
            ("ǅ", "ǆ"),
            ("ǈ", "ǉ"),
            ("Ǳ", "ǳ"),
            ("Ⅻ", "ⅻ"),
            ("Ⓐ", "ⓐ"),
            ("𐐀𐐁", "𐐨𐐩"),
            ("Ꭰ", "ꭰ"),
            ("Ა", "ა"),
            ("ſ", "ſ"),
            ("ﬀ", "ﬀ"),
            ("ŉ", "ŉ"),
            ("ΐ", "ΐ"),
            ("ǰ", "ǰ"),
            ("Ⱥ", "ⱥ"),
            ("ꞵ", "ꞵ"),
            ("Ꞵ", "ꞵ"),
            ("ＡＢＣ", "ａｂｃ"),
            ("À la CAFÉ", "à la café"),
            ("STRASSE Straße", "strasse straße"),
            ("中文字符 ABC", "中文字符 abc"),
            ("ÉCOLE Σ", "école σ"),
            ("МОСКВА", "москва"),
            ("ԱՐԱՄ", "արամ"),
            ("Ǆ", "ǆ"),
            ("ꟶ", "ꟶ"),
            ("ẞΣ", "ßς"),
        ];
        for (input, want) in table {
            assert_eq!(python_lower(input), *want, "{input:?}.lower()");
        }
    }

    #[test]
    fn unescape() {
        assert_eq!(
            html_unescape("a &lt;b&gt; &#39;c&#x27; &amp;amp; &bogus; &"),
            "a <b> 'c' &amp; &bogus; &"
        );
    }
}
