//! A principal id taken from a token claim: refused when it holds characters a reader cannot see or that change
//! how the text around them is shown, and normalized as its issuer is configured, so that one person is one
//! principal (as requester, approver and grant holder) and two ids that look alike are never two approvers.

use unicode_normalization::UnicodeNormalization;

use super::config::PrincipalNormalize;
use super::error::AuthError;

/// The principal id in `value` (the `claim`'s string), normalized per `normalize`; an [`AuthError::InvalidClaim`]
/// naming the claim and the first offending character when it holds an invisible, format or control character.
pub(super) fn principal_id(
    claim: &str,
    value: &str,
    normalize: PrincipalNormalize,
) -> Result<String, AuthError> {
    if let Some(c) = value.chars().find(|c| hidden(*c)) {
        return Err(AuthError::InvalidClaim(format!(
            "`{claim}` holds an invisible, format or control character (U+{:04X}); principal ids must be visible text",
            u32::from(c)
        )));
    }
    Ok(match normalize {
        PrincipalNormalize::Exact => value.to_string(),
        PrincipalNormalize::Nfc => value.nfc().collect(),
        PrincipalNormalize::NfcFold => value.nfc().collect::<String>().to_lowercase(),
    })
}

/// Whether a principal id taken from elsewhere (a client certificate's `what` name) is visible text, as
/// [`principal_id`] requires of token claims; says why not.
pub(crate) fn visible(what: &str, value: &str) -> Result<(), String> {
    match value.chars().find(|c| hidden(*c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "the client certificate's {what} name holds an invisible, format or control character (U+{:04X}); \
             principal ids must be visible text",
            u32::from(c)
        )),
    }
}

/// Control characters (C0, DEL, C1), Unicode format characters (zero-width, joiners, bidi embeddings, overrides
/// and isolates, the byte order mark, soft hyphen ...), other invisible marks, and any whitespace but the ASCII
/// space (line and paragraph separators, no-break and ideographic spaces look like a space or like nothing).
fn hidden(c: char) -> bool {
    if c == ' ' {
        return false;
    }
    c.is_control()
        || c.is_whitespace()
        || matches!(
            u32::from(c),
            0x00AD                  // soft hyphen
            | 0x034F                // combining grapheme joiner
            | 0x061C                // Arabic letter mark
            | 0x115F | 0x1160       // Hangul fillers
            | 0x17B4 | 0x17B5       // Khmer inherent vowels
            | 0x180B..=0x180F       // Mongolian variation selectors and vowel separator
            | 0x200B..=0x200F       // zero-width space, non-joiner, joiner, LRM, RLM
            | 0x202A..=0x202E       // bidi embeddings and overrides
            | 0x2060..=0x206F       // word joiner, invisible operators, bidi isolates, deprecated format
            | 0x3164                // Hangul filler
            | 0xFE00..=0xFE0F       // variation selectors
            | 0xFEFF                // byte order mark, zero-width no-break space
            | 0xFFA0                // half-width Hangul filler
            | 0xFFF9..=0xFFFB       // interlinear annotation
            | 0x1BCA0..=0x1BCA3     // shorthand format controls
            | 0x1D173..=0x1D17A     // musical format controls
            | 0xE0000..=0xE007F     // tags
            | 0xE0100..=0xE01EF // variation selectors supplement
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_are_refused_and_visible_ids_normalized() {
        for bad in [
            "erin\u{200b}",
            "\u{202e}nire",
            "er\u{2066}in",
            "erin\u{feff}",
            "erin\n",
            "erin\u{85}",
            "erin\u{a0}",
            "erin\u{0}",
            "er\u{ad}in",
        ] {
            let e = principal_id("sub", bad, PrincipalNormalize::Exact).unwrap_err();
            assert!(
                matches!(&e, AuthError::InvalidClaim(m) if m.contains("`sub`")),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(
            principal_id("sub", "Erin Smith", PrincipalNormalize::Exact).unwrap(),
            "Erin Smith"
        );
        let decomposed = "Jose\u{301}";
        assert_eq!(
            principal_id("sub", decomposed, PrincipalNormalize::Nfc).unwrap(),
            "Jos\u{e9}"
        );
        assert_eq!(
            principal_id("sub", decomposed, PrincipalNormalize::NfcFold).unwrap(),
            "jos\u{e9}"
        );
        assert_eq!(
            principal_id("sub", "Erin", PrincipalNormalize::NfcFold).unwrap(),
            "erin"
        );
    }
}
