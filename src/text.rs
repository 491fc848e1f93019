//! Small text formatting shared by the CLI and the GUI.

/// `[32, 112, 112]` -> `32x112x112`.
pub fn shape_text(shape: &[usize]) -> String {
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

/// 4652008 -> `4,652,008`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_and_shapes() {
        assert_eq!(thousands(4652008), "4,652,008");
        assert_eq!(thousands(928), "928");
        assert_eq!(thousands(0), "0");
        assert_eq!(shape_text(&[32, 112, 112]), "32x112x112");
    }
}
