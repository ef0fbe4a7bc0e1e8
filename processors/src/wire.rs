//! The protobuf wire format, field by field: the one walker both hand-written readers
//! of OTLP protobuf use (the spans fast path, `convert::traces::wire`, and the UTF-8
//! repair of [`crate::otlp_proto`]). It checks what prost checks of a field's framing
//! (varint length, key range, wire type, lengths inside the buffer), so that what it
//! accepts, prost decodes too.

/// The bytes do not frame as protobuf (or use groups, which OTLP does not).
#[derive(Debug)]
pub(crate) struct Malformed;

pub(crate) type Wire<T> = std::result::Result<T, Malformed>;

/// One field of a message on the wire.
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    pub(crate) fn varint(self) -> Wire<u64> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(Malformed),
        }
    }
    pub(crate) fn fixed64(self) -> Wire<u64> {
        match self {
            Value::Fixed64(v) => Ok(v),
            _ => Err(Malformed),
        }
    }
    pub(crate) fn fixed32(self) -> Wire<u32> {
        match self {
            Value::Fixed32(v) => Ok(v),
            _ => Err(Malformed),
        }
    }
    pub(crate) fn bytes(self) -> Wire<&'a [u8]> {
        match self {
            Value::Bytes(v) => Ok(v),
            _ => Err(Malformed),
        }
    }
    pub(crate) fn str(self) -> Wire<&'a str> {
        let bytes = self.bytes()?;
        if bytes.is_ascii() {
            // SAFETY: ASCII is valid UTF-8. Most strings of a request (keys, names,
            // ids in text) are short ASCII, which this checks a word at a time, inline,
            // where `from_utf8` is a call that sets up its own loop for each one.
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).map_err(|_| Malformed)
    }
}

/// The fields of one message, in wire order.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn of(message: &'a [u8]) -> Self {
        Fields { rest: message }
    }

    #[inline(always)]
    fn varint(&mut self) -> Wire<u64> {
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            // The tenth byte may only carry the 64th bit, as prost requires.
            if i == 9 && byte > 1 {
                return Err(Malformed);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(Malformed)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Wire<&'a [u8]> {
        if n > self.rest.len() {
            return Err(Malformed);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// The next field, as (field number, value); `None` at the end of the message.
    ///
    /// Inlined into each message's loop, with the reads it makes: called, it hands its
    /// answer (a 40-byte enum) back through the stack for every field of every span,
    /// and the loop waits on those stores and loads; inlined, the field stays in
    /// registers and the loop's `match` on its number is folded into the decoding
    /// (`benches/RESULTS.md`, session 23).
    #[inline(always)]
    pub(crate) fn next(&mut self) -> Wire<Option<(u64, Value<'a>)>> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || key > u64::from(u32::MAX) {
            return Err(Malformed);
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().map_err(|_| Malformed)?,
            )),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
                Value::Bytes(self.take(len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().map_err(|_| Malformed)?,
            )),
            // Groups are not used by OTLP; prost's skipping of them is left to prost.
            _ => return Err(Malformed),
        };
        Ok(Some((number, value)))
    }
}

impl<'a> Fields<'a> {
    /// What is left of the message: after [`Fields::next`], the bytes past that field.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A varint at the start of `bytes`, and how many bytes it took.
    fn read(bytes: &[u8]) -> Wire<(u64, usize)> {
        let mut fields = Fields::of(bytes);
        let value = fields.varint()?;
        Ok((value, bytes.len() - fields.rest().len()))
    }

    #[test]
    fn varints_read_as_prost_writes_them() {
        let values = [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ];
        for value in values {
            let mut bytes = Vec::new();
            prost::encoding::encode_varint(value, &mut bytes);
            let len = bytes.len();
            // The next field's first byte is left for it.
            bytes.push(0x0a);
            assert_eq!(read(&bytes).unwrap(), (value, len), "{value}");
        }
    }

    #[test]
    fn varints_prost_refuses_are_malformed_and_those_it_takes_are_read() {
        for refused in [
            &[][..],
            &[0x80],
            &[0xff, 0xff],
            &[0xff; 10],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
        ] {
            assert!(read(refused).is_err(), "{refused:?}");
            assert!(prost::encoding::decode_varint(&mut &refused[..]).is_err());
        }
        // Longer than it needs to be, yet framed: prost reads it, and so does this.
        for padded in [&[0x80, 0x00][..], &[0x81, 0x80, 0x00]] {
            let prost = prost::encoding::decode_varint(&mut &padded[..]).unwrap();
            assert_eq!(read(padded).unwrap(), (prost, padded.len()));
        }
    }
}
