//! JSON text byte-identical to Python's `json.dumps(obj, ensure_ascii=False)` for what the CLI
//! prints: strings, booleans and float numbers (separators `", "` and `": "`, floats in Python
//! `repr` form such as `1e-05` or `0.5`).

use std::fmt::Write;

/// A fixed buffer for one formatted float (no allocation on the CLI's hot path).
struct Buf {
    bytes: [u8; 40],
    len: usize,
}

impl Write for Buf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip (Rust finds the same ones),
/// fixed notation for decimal exponents -4..15, scientific with two exponent digits otherwise.
pub fn float_repr(x: f64) -> String {
    let mut out = String::new();
    push_float(&mut out, x);
    out
}

/// Append [`float_repr`] of `x` to `out`.
pub fn push_float(out: &mut String, x: f64) {
    if x.is_nan() {
        return out.push_str("NaN");
    }
    if x.is_infinite() {
        return out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
    }
    if x == 0.0 {
        return out.push_str(if x.is_sign_negative() { "-0.0" } else { "0.0" });
    }
    if x < 0.0 {
        out.push('-');
    }
    let mut buf = Buf { bytes: [0; 40], len: 0 };
    write!(buf, "{:e}", x.abs()).expect("an f64 fits in 40 bytes"); // e.g. "9.87654e-1"
    let text = std::str::from_utf8(&buf.bytes[..buf.len]).expect("ASCII");
    let (mantissa, exp) = text.split_once('e').expect("LowerExp writes an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    let (first, rest) = mantissa.split_at(1);
    let rest = rest.strip_prefix('.').unwrap_or(rest); // the digits after the first
    if !(-4..16).contains(&exp) {
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        out.push_str("0.");
        (1..-exp).for_each(|_| out.push('0'));
        out.push_str(first);
        out.push_str(rest);
    } else {
        let point = exp as usize; // digits of rest before the decimal point
        out.push_str(first);
        if rest.len() <= point {
            out.push_str(rest);
            (rest.len()..point).for_each(|_| out.push('0'));
            out.push_str(".0");
        } else {
            out.push_str(&rest[..point]);
            out.push('.');
            out.push_str(&rest[point..]);
        }
    }
}

/// Append `s` as a JSON string: `"`, `\` and control characters escaped as Python does,
/// everything else (U+007F, U+0085, U+2028, any non-ASCII) raw.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One CLI line: `{"text": …, "label": …, "probabilities": {label: p, …}, "confident": …}`.
///
/// `rule`: `None` for a model without reflex rules (no `"rule"` key); for a model with rules,
/// `Some(name)` of the rule that answered or `Some(None)` (`"rule": null`) for the model.
pub fn prediction_line(
    out: &mut String,
    text: &str,
    labels: &[String],
    probabilities: &[f64],
    label: usize,
    confident: bool,
    rule: Option<Option<&str>>,
) {
    out.push_str("{\"text\": ");
    write_str(out, text);
    out.push_str(", \"label\": ");
    write_str(out, &labels[label]);
    out.push_str(", \"probabilities\": {");
    for (k, (name, p)) in labels.iter().zip(probabilities).enumerate() {
        if k > 0 {
            out.push_str(", ");
        }
        write_str(out, name);
        out.push_str(": ");
        push_float(out, *p);
    }
    out.push_str("}, \"confident\": ");
    out.push_str(if confident { "true" } else { "false" });
    match rule {
        None => {}
        Some(None) => out.push_str(", \"rule\": null"),
        Some(Some(name)) => {
            out.push_str(", \"rule\": ");
            write_str(out, name);
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_as_python_repr() {
        for (x, want) in [
            (0.5, "0.5"),
            (1.0, "1.0"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (0.9876543283462524, "0.9876543283462524"),
            (123456789012345.6, "123456789012345.6"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (2.5e-300, "2.5e-300"),
            (-0.25, "-0.25"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (100.0, "100.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(float_repr(x), want, "{x:e}");
        }
    }

    #[test]
    fn strings_as_python_json() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}\u{85}\u{2028}é😀");
        assert_eq!(out, "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f\u{7f}\u{85}\u{2028}é😀\"");
    }
}
