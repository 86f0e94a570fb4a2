//! How key and value arguments are read: as text (UTF-8, the default), or, with --key-hex /
//! --value-hex, as hex, so that any bytes can be given; `set --value-file` reads a value
//! from a file as it is.

use crate::Failure;
use std::sync::OnceLock;

/// The encodings chosen on the command line, set once at start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Encodings {
    pub key_hex: bool,
    pub value_hex: bool,
}

static ENCODINGS: OnceLock<Encodings> = OnceLock::new();

pub fn set(e: Encodings) {
    let _ = ENCODINGS.set(e);
}

fn decode(arg: &str, hex: bool, what: &str) -> Result<Vec<u8>, Failure> {
    if !hex {
        return Ok(arg.as_bytes().to_vec());
    }
    let t = arg.strip_prefix("0x").unwrap_or(arg);
    if !t.len().is_multiple_of(2) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Failure::Error(format!(
            "{what} {arg:?} is not hex (an even number of 0-9, a-f)"
        )));
    }
    Ok((0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap_or_default())
        .collect())
}

/// A key argument as bytes.
pub fn key(arg: &str) -> Result<Vec<u8>, Failure> {
    decode(arg, ENCODINGS.get().is_some_and(|e| e.key_hex), "key")
}

/// Stands for the value `set --value-file` read (never a value given on the command line:
/// it holds a NUL).
pub const FILE_VALUE: &str = "\0<value-file>";

static FILE: OnceLock<Vec<u8>> = OnceLock::new();

/// The bytes of `--value-file`.
pub fn set_file_value(bytes: Vec<u8>) {
    let _ = FILE.set(bytes);
}

/// A value argument as bytes.
pub fn value(arg: &str) -> Result<Vec<u8>, Failure> {
    if arg == FILE_VALUE {
        return Ok(FILE.get().cloned().unwrap_or_default());
    }
    decode(arg, ENCODINGS.get().is_some_and(|e| e.value_hex), "value")
}
