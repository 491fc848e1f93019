//! Run folder names: made from the date, the mode and the dataset, and checked to be safe as a
//! folder name on every OS (no separators, none of Windows' reserved characters or device
//! names, no leading dot or dash, no trailing dot or space).

use crate::train::Mode;
use crate::{Error, Result};

use super::stamp::Stamp;

/// The longest name accepted, in bytes (well under every file system's limit).
pub const MAX_LEN: usize = 120;
/// The longest dataset part of a generated name, in characters.
const MAX_DATASET: usize = 40;

/// `2026-11-29T2210-extract-fashion-mini`: the first name tried for a new run.
pub fn base_name(when: &Stamp, mode: Mode, dataset: &str) -> String {
    format!("{}-{}-{}", when.compact(), mode.name(), slug(dataset))
}

/// The `n`-th name tried (1: `base`, then `base-2`, `base-3` ...).
pub fn numbered(base: &str, n: usize) -> String {
    if n <= 1 {
        base.to_string()
    } else {
        format!("{base}-{n}")
    }
}

/// A dataset name reduced to lowercase ASCII letters, digits, `_` and single dashes
/// (`My Photos (2)` -> `my-photos-2`); `data` when nothing is left.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for ch in text.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            out.push(ch.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.chars().count() >= MAX_DATASET {
            break;
        }
    }
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "data".to_string()
    } else {
        out.to_string()
    }
}

/// Windows' device names, which cannot name a file in any folder (with any extension).
const RESERVED: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Checks that `name` can name a run folder on every OS, or says why not.
pub fn check(name: &str) -> Result<()> {
    let refuse = |why: &str| {
        Err(Error::Workspace(format!(
            "`{name}` cannot name a run: {why}"
        )))
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > MAX_LEN {
        return refuse(&format!("it is longer than {MAX_LEN} bytes"));
    }
    if let Some(ch) = name.chars().find(|&c| {
        c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|')
    }) {
        return refuse(&format!(
            "it contains {ch:?} (not allowed: / \\ : * ? \" < > | and control characters)"
        ));
    }
    if name.starts_with('.') {
        return refuse("it starts with a dot");
    }
    if name.starts_with('-') {
        return refuse("it starts with a dash");
    }
    if name.ends_with('.') || name.ends_with(' ') || name.starts_with(' ') {
        return refuse("it starts or ends with a space, or ends with a dot");
    }
    let stem = name.split('.').next().unwrap_or(name);
    if RESERVED
        .iter()
        .any(|r| r.eq_ignore_ascii_case(stem.trim_end()))
    {
        return refuse("it is a device name on Windows");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid_and_readable() {
        let when = Stamp::from_unix(1_795_990_205);
        let name = base_name(&when, Mode::Extract, "fashion-mini");
        assert_eq!(name, "2026-11-29T2210-extract-fashion-mini");
        check(&name).unwrap();
        assert_eq!(numbered(&name, 1), name);
        assert_eq!(numbered(&name, 3), format!("{name}-3"));
        for hostile in [
            "My Photos (2)",
            "../..",
            "CON",
            "a:b*c",
            "",
            "Ünïcødé",
            "x".repeat(500).as_str(),
        ] {
            let name = base_name(&when, Mode::Finetune, hostile);
            check(&name).unwrap_or_else(|e| panic!("{hostile:?}: {e}"));
        }
        assert_eq!(slug("My Photos (2)"), "my-photos-2");
        assert_eq!(slug("../.."), "data");
        assert_eq!(slug(&"x".repeat(500)).len(), MAX_DATASET);
    }

    #[test]
    fn unsafe_names_are_refused_with_the_reason() {
        for (name, why) in [
            ("", "empty"),
            ("a/b", "'/'"),
            ("a\\b", "'\\\\'"),
            ("..", "dot"),
            (".hidden", "dot"),
            ("-rf", "dash"),
            ("trailing.", "ends"),
            ("trailing ", "ends"),
            ("nul", "device"),
            ("Com1.txt", "device"),
            ("tab\there", "'\\t'"),
        ] {
            let err = check(name).unwrap_err().to_string();
            assert!(err.contains(why), "{name:?}: {err}");
        }
        check(&"y".repeat(MAX_LEN)).unwrap();
        assert!(check(&"y".repeat(MAX_LEN + 1)).is_err());
        check("best run (lr 1e-4)").unwrap();
        check("console").unwrap();
    }
}
