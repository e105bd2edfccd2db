//! The Unicode data the text spec needs, and which Unicode version each part comes from.
//!
//! | step | source | Unicode |
//! |---|---|---|
//! | 1 NFKC, combining classes | crate `unicode-normalization` | [`NFKC_UNICODE_VERSION`] |
//! | 2 lowercase, Final_Sigma | Rust's standard library (`str::to_lowercase`) | [`CASE_UNICODE_VERSION`] |
//! | 3 general categories | crate `regex-syntax` (`\p{gc=..}` classes) | [`CATEGORY_UNICODE_VERSION`] |
//!
//! docs/preprocessor-spec.md (section 7) lists which inputs may differ between Unicode versions.

use regex_syntax::hir::{Class, HirKind};

/// Unicode version of the NFKC tables (crate `unicode-normalization`).
pub const NFKC_UNICODE_VERSION: (u8, u8, u8) = unicode_normalization::UNICODE_VERSION;
/// Unicode version of lowercasing and of the Cased / Case_Ignorable properties (std).
pub const CASE_UNICODE_VERSION: (u8, u8, u8) = std::char::UNICODE_VERSION;
/// Unicode version of the general-category tables of `regex-syntax` 0.6 (checked by a test).
pub const CATEGORY_UNICODE_VERSION: (u8, u8, u8) = (14, 0, 0);

/// `"nfkc 15.0.0, case 17.0.0, categories 14.0.0"`: what [`runtime_unicode_versions`] reports.
pub fn runtime_unicode_versions() -> String {
    let v = |(a, b, c): (u8, u8, u8)| format!("{a}.{b}.{c}");
    format!(
        "NFKC {}, case mapping {}, general categories {}",
        v(NFKC_UNICODE_VERSION),
        v(CASE_UNICODE_VERSION),
        v(CATEGORY_UNICODE_VERSION)
    )
}

/// The 30 two-letter Unicode general categories, the only values `removed_categories` may hold.
pub const GENERAL_CATEGORIES: [&str; 30] = [
    "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
    "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn",
];

/// A set of code points given by general categories, as sorted, disjoint ranges.
///
/// Surrogates (`Cs`) are tracked apart: Rust's `char` cannot hold them, but the Python
/// extension can receive unpaired ones, which the spec removes when `Cs` is listed.
#[derive(Debug, Clone, Default)]
pub struct CategorySet {
    ranges: Vec<(u32, u32)>,
    surrogates: bool,
}

impl CategorySet {
    /// The union of `categories` (two-letter names such as `"Cf"`).
    ///
    /// # Errors
    /// A name that is not one of the 30 [`GENERAL_CATEGORIES`].
    pub fn new<S: AsRef<str>>(categories: &[S]) -> Result<Self, String> {
        let mut set = CategorySet::default();
        for name in categories {
            let name = name.as_ref();
            if !GENERAL_CATEGORIES.contains(&name) {
                return Err(format!(
                    "normalizer.removed_categories contains {name:?}, which is not a two-letter \
                     Unicode general category"
                ));
            }
            if name == "Cs" {
                set.surrogates = true;
                continue;
            }
            set.ranges.extend(category_ranges(name));
        }
        set.ranges.sort_unstable();
        Ok(set)
    }

    /// Whether the code point `cp` (a surrogate or a scalar value) is in the set.
    pub fn contains(&self, cp: u32) -> bool {
        if (0xD800..=0xDFFF).contains(&cp) {
            return self.surrogates;
        }
        let i = self.ranges.partition_point(|&(start, _)| start <= cp);
        i > 0 && cp <= self.ranges[i - 1].1
    }

    /// Whether unpaired surrogates are removed (`Cs` is listed).
    pub fn removes_surrogates(&self) -> bool {
        self.surrogates
    }
}

/// The code point ranges of one general category, from `regex-syntax`'s Unicode tables.
fn category_ranges(name: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(true)
        .build()
        .parse(&format!(r"\p{{gc={name}}}"))
        .expect("every two-letter general category is a valid regex class");
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        other => unreachable!("\\p{{gc={name}}} parsed to {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_unicode_14() {
        // U+13438 EGYPTIAN HIEROGLYPH END SEGMENT is Cf since Unicode 12; U+13439..U+1343F
        // were added (Cf) in Unicode 15.0, U+2FFC (So) in 15.1. If regex-syntax moves on,
        // update CATEGORY_UNICODE_VERSION and the caveat table of the spec.
        let cf = CategorySet::new(&["Cf"]).unwrap();
        assert!(cf.contains(0x13438));
        assert!(!cf.contains(0x13439));
        let cn = CategorySet::new(&["Cn"]).unwrap();
        assert!(cn.contains(0x1FAE8)); // 🫨, Unicode 15.0
        assert!(!cn.contains(0x1FAE7)); // 🫧, Unicode 14.0
    }

    #[test]
    fn control_format_and_surrogates() {
        let set = CategorySet::new(&["Cc", "Cf", "Cs"]).unwrap();
        for cp in [0x00, 0x1F, 0x7F, 0x85, 0x9F, 0x200B, 0x200D, 0xFEFF, 0xAD, 0x180E, 0xE0001] {
            assert!(set.contains(cp), "U+{cp:04X}");
        }
        for cp in [0x20, 0x41, 0x4E00, 0x2028, 0xE000, 0x1F600] {
            assert!(!set.contains(cp), "U+{cp:04X}");
        }
        assert!(set.contains(0xD800) && set.contains(0xDFFF));
        assert!(!CategorySet::new(&["Cc"]).unwrap().contains(0xD800));
    }

    #[test]
    fn unknown_category_is_refused() {
        let err = CategorySet::new(&["Cc", "Xx"]).unwrap_err();
        assert!(err.contains("\"Xx\""), "{err}");
    }
}
