//! The `Data` field of every `ecpayment` call, both directions (docs/PROTOCOLS.md §E1.4):
//!
//! ```text
//! encrypt: JSON ─PHP urlencode─▶ ASCII ─AES-128-CBC(HashKey, HashIV, PKCS7)─▶ bytes ─base64─▶ Data
//! decrypt: Data ─base64─▶ bytes ─AES-128-CBC + unpad─▶ ASCII ─form-decode─▶ UTF-8 ─▶ JSON
//! ```
//!
//! Pure functions, symmetric, so the sandbox can decrypt requests and encrypt answers with the
//! same code the client uses. Every failure is a [`CryptoError`]; nothing here panics on input,
//! and no error message contains the key, the IV or decrypted text.

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretBox};

type Enc = cbc::Encryptor<aes::Aes128>;
type Dec = cbc::Decryptor<aes::Aes128>;

const BLOCK: usize = 16;

/// Why a `Data` value could not be produced or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// HashKey or HashIV is not exactly 16 bytes (AES-128). Only the length is reported.
    #[error("{part} must be exactly 16 bytes, got {len}")]
    KeyLength { part: &'static str, len: usize },
    #[error("Data is not standard base64: {0}")]
    Base64(String),
    #[error("Data is {0} bytes after base64, not a positive multiple of the 16-byte AES block")]
    CipherLength(usize),
    /// Almost always a wrong HashKey/HashIV, otherwise corrupted data.
    #[error("Data does not decrypt with this HashKey/HashIV (bad PKCS7 padding)")]
    Padding,
    #[error("decrypted Data is not UTF-8 after URL-decoding (byte offset {0})")]
    NotUtf8(usize),
    #[error("decrypted Data is not JSON: {0}")]
    Json(String),
}

/// HashKey and HashIV as AES key and IV: the 16 raw ASCII bytes of each, not hex-decoded and
/// not hashed; the IV is fixed, not random and not prepended (docs/PROTOCOLS.md §E1.4).
///
/// Both live in zeroize-on-drop boxes; `Debug` prints neither.
pub struct DataKey {
    key: SecretBox<[u8; BLOCK]>,
    iv: SecretBox<[u8; BLOCK]>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

fn block(part: &'static str, bytes: &[u8]) -> Result<SecretBox<[u8; BLOCK]>, CryptoError> {
    let arr: [u8; BLOCK] = bytes.try_into().map_err(|_| CryptoError::KeyLength {
        part,
        len: bytes.len(),
    })?;
    Ok(SecretBox::new(Box::new(arr)))
}

impl DataKey {
    /// `hash_key` and `hash_iv` as configured for the merchant; each must be 16 bytes.
    pub fn new(hash_key: &[u8], hash_iv: &[u8]) -> Result<Self, CryptoError> {
        Ok(Self {
            key: block("HashKey", hash_key)?,
            iv: block("HashIV", hash_iv)?,
        })
    }

    fn encryptor(&self) -> Enc {
        Enc::new(
            self.key.expose_secret().into(),
            self.iv.expose_secret().into(),
        )
    }

    fn decryptor(&self) -> Dec {
        Dec::new(
            self.key.expose_secret().into(),
            self.iv.expose_secret().into(),
        )
    }
}

/// PHP `urlencode()`: `A-Z a-z 0-9 - _ .` stay, space becomes `+`, every other byte of the
/// UTF-8 text becomes `%XX` with upper-case hex (so `*`, `~`, `!`, `(`, `)`, `'` are escaped;
/// `form_urlencoded` would leave `*` alone and break the official vectors).
pub fn php_urlencode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len() * 3);
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0x0f)] as char);
            }
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// PHP `urldecode()` / form decoding, to bytes: `+` is a space, `%XX` in either hex case is
/// a byte, anything else (including `!*()~` a .NET encoder leaves bare, and a `%` not followed
/// by two hex digits) is kept as it is.
pub fn form_decode_bytes(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < text.len() => match (hex_value(text[i + 1]), hex_value(text[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    out
}

/// Form-decodes and then checks UTF-8 (CJK status strings arrive as `%E5%B7%B2…`).
pub fn form_decode(text: &[u8]) -> Result<String, CryptoError> {
    String::from_utf8(form_decode_bytes(text))
        .map_err(|e| CryptoError::NotUtf8(e.utf8_error().valid_up_to()))
}

/// Encrypts text that is already URL-encoded. Exposed for the vector tests (the official
/// lower-case-hex example) and for a sandbox that wants to imitate another encoder.
pub fn encrypt_urlencoded(urlencoded: &str, key: &DataKey) -> String {
    let ct = key
        .encryptor()
        .encrypt_padded_vec::<Pkcs7>(urlencoded.as_bytes());
    STANDARD.encode(ct)
}

/// Decrypts `Data` to the URL-encoded text, before form-decoding.
pub fn decrypt_to_urlencoded(data: &str, key: &DataKey) -> Result<Vec<u8>, CryptoError> {
    // Whitespace carries no base64 meaning; tolerate a wrapped value.
    let compact: Vec<u8> = data.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let ct = STANDARD
        .decode(&compact)
        .map_err(|e| CryptoError::Base64(e.to_string()))?;
    if ct.is_empty() || ct.len() % BLOCK != 0 {
        return Err(CryptoError::CipherLength(ct.len()));
    }
    key.decryptor()
        .decrypt_padded_vec::<Pkcs7>(&ct)
        .map_err(|_| CryptoError::Padding)
}

/// JSON text → `Data` (PHP-urlencode, then AES, then base64).
pub fn encrypt_data(json_text: &str, key: &DataKey) -> String {
    encrypt_urlencoded(&php_urlencode(json_text), key)
}

/// `Data` → JSON text (base64, AES, unpad, form-decode, UTF-8). The text is not parsed.
pub fn decrypt_data(data: &str, key: &DataKey) -> Result<String, CryptoError> {
    form_decode(&decrypt_to_urlencoded(data, key)?)
}

/// A JSON value → `Data`.
pub fn encrypt_json(value: &serde_json::Value, key: &DataKey) -> String {
    encrypt_data(&value.to_string(), key)
}

/// `Data` → a JSON value.
pub fn decrypt_json(data: &str, key: &DataKey) -> Result<serde_json::Value, CryptoError> {
    let text = decrypt_data(data, key)?;
    // serde_json's messages give a line and column, never the text itself.
    serde_json::from_str(&text).map_err(|e| CryptoError::Json(e.to_string()))
}

#[cfg(test)]
#[path = "crypto_tests.rs"]
mod tests;
