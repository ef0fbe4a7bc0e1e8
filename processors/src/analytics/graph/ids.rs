//! Trace and span ids as the stored text spells them, read back into numbers so the
//! pairing stores key on 24 bytes rather than two strings.

/// The value of `s` as hexadecimal digits, if it is exactly `digits` of them.
fn hex(s: &str, digits: usize) -> Option<u128> {
    if s.len() != digits {
        return None;
    }
    // Digits are OR-ed into the accumulator, and one that is not a digit into `bad`:
    // no branch per character.
    let (mut acc, mut bad) = (0u128, 0u8);
    for b in s.bytes() {
        let digit = HEX_DIGITS[b as usize];
        bad |= digit;
        acc = acc << 4 | u128::from(digit & 0x0f);
    }
    (bad & 0x80 == 0).then_some(acc)
}

/// Each byte's value as a hexadecimal digit, or 0x80 when it is not one.
static HEX_DIGITS: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

pub(super) fn hex_u128(s: &str) -> Option<u128> {
    hex(s, 32)
}

pub(super) fn hex_u64(s: &str) -> Option<u64> {
    hex(s, 16).map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_as_hexadecimal_of_their_length() {
        assert_eq!(hex_u64("00000000000000fF"), Some(255));
        assert_eq!(hex_u64("ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(hex_u128(&"0".repeat(31)), None);
        assert_eq!(hex_u128(&format!("{}1", "0".repeat(31))), Some(1));
        assert_eq!(hex_u64("000000000000000g"), None);
        assert_eq!(hex_u64("+00000000000000f"), None);
        assert_eq!(hex_u64("0123456789abcdef"), Some(0x0123_4567_89ab_cdef));
        assert_eq!(hex_u64("ABCDEF0123456789"), Some(0xabcd_ef01_2345_6789));
        // 16 bytes, one character of them two bytes long.
        assert_eq!(hex_u64("00000000000000\u{e9}"), None);
    }
}
