//! The one set of characters the service never keeps in customer text, and the cleaning of single-
//! and multi-line fields with it. Input cleaning, issue titles and the issue body's fences all use
//! [`is_invisible`], so text measured in one place is the text shown in another: a character that
//! survived input cleaning but was stripped later could otherwise join two backtick runs into one
//! that closes a fence.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Characters that render as nothing or change how neighbouring text reads: controls (C0, DEL,
/// C1), Unicode's format characters (general category Cf: bidirectional controls, zero-width
/// characters, U+061C, U+00AD, U+180E, tag characters U+E0000–E007F, …) and the rest of the
/// default-ignorable code points (variation selectors, fillers, U+034F, …). Line breaks and tabs
/// are controls too; the multi-line cleaner keeps them itself.
pub fn is_invisible(c: char) -> bool {
    c.is_control() || c.general_category() == GeneralCategory::Format || is_default_ignorable(c)
}

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt) beyond category Cf, which
/// [`is_invisible`] tests separately.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// One line of text: NFC, no invisible characters, runs of white space folded, trimmed.
pub fn clean_single_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.nfc() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if is_invisible(c) {
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
    }
    out
}

/// Multi-line text: NFC, `\r\n`, `\r` and the Unicode line and paragraph separators made `\n`,
/// tabs kept, other invisible characters removed, white space trimmed at both ends.
pub fn clean_multi_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.nfc().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            '\u{2028}' | '\u{2029}' => out.push('\n'),
            '\n' | '\t' => out.push(c),
            c if is_invisible(c) => {}
            c => out.push(c),
        }
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_format_and_default_ignorable_characters_are_invisible() {
        for c in [
            '\u{0}',
            '\n',
            '\u{7f}',
            '\u{85}',
            '\u{AD}',
            '\u{34F}',
            '\u{61C}',
            '\u{180E}',
            '\u{200B}',
            '\u{200D}',
            '\u{202E}',
            '\u{2066}',
            '\u{2069}',
            '\u{2064}',
            '\u{FE00}',
            '\u{FE0F}',
            '\u{FEFF}',
            '\u{FFF9}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E007F}',
            '\u{E0100}',
            '\u{110BD}',
            '\u{13430}',
        ] {
            assert!(is_invisible(c), "U+{:04X}", c as u32);
        }
        for c in ['a', 'é', '`', '@', '#', ' ', '\u{A0}', '日', '😀'] {
            assert!(!is_invisible(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn single_line_fields_lose_invisible_characters() {
        assert_eq!(clean_single_line(" a\u{0}b\u{202E}c\r\n  d\t"), "abc d");
        assert_eq!(clean_single_line("e\u{301}"), "\u{e9}");
        assert_eq!(clean_single_line("so\u{AD}ft \u{E0041}tag\u{61C}"), "soft tag");
    }

    #[test]
    fn messages_keep_lines_and_lose_other_invisible_characters() {
        assert_eq!(
            clean_multi_line("one\r\ntwo\rthree\u{7}\u{2066}\n\tfour\u{2028}five\u{180E}  "),
            "one\ntwo\nthree\n\tfour\nfive"
        );
        assert_eq!(clean_multi_line("```\u{61C}```"), "``````");
    }
}
