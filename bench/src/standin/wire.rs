//! The two wire formats of Kinesis' API: JSON 1.1 and CBOR 1.1. Requests are decoded into a
//! [`Req`] (the few scalar fields the stand-in reads); answers are written from an [`Out`]
//! tree, or, for `GetRecords`, around pre-encoded records (see `super::Stream::get_records`).

use base64::Engine as _;
use std::collections::HashMap;

/// A wire format; an answer uses its request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `application/x-amz-json-1.1`: the AWS SDK for Rust, boto3, the Java SDK with CBOR off.
    Json,
    /// `application/x-amz-cbor-1.1`: the Java SDK v2's default for Kinesis.
    Cbor,
}

impl Format {
    /// From a request's `Content-Type` (JSON unless it says CBOR).
    pub fn from_content_type(ct: &str) -> Format {
        if ct.contains("cbor") {
            Format::Cbor
        } else {
            Format::Json
        }
    }

    /// The `Content-Type` of an answer.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/x-amz-json-1.1",
            Format::Cbor => "application/x-amz-cbor-1.1",
        }
    }
}

/// A request's top-level scalar fields.
#[derive(Debug, Default)]
pub struct Req {
    fields: HashMap<String, Val>,
}

#[derive(Debug)]
enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    /// A CBOR tag 1 timestamp, in the Java SDK's unit: epoch milliseconds.
    TimeMs(i64),
    Other,
}

impl Req {
    /// Decodes a request body ( an empty body is an empty request).
    pub fn decode(format: Format, body: &[u8]) -> Result<Req, String> {
        if body.is_empty() {
            return Ok(Req::default());
        }
        let mut fields = HashMap::new();
        match format {
            Format::Json => {
                let v: serde_json::Value =
                    serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
                let obj = v.as_object().ok_or("the body is not a JSON object")?;
                for (k, v) in obj {
                    let val = match v {
                        serde_json::Value::String(s) => Val::Str(s.clone()),
                        serde_json::Value::Number(n) => match n.as_i64() {
                            Some(i) => Val::Int(i),
                            None => Val::Float(n.as_f64().unwrap_or(f64::NAN)),
                        },
                        _ => Val::Other,
                    };
                    fields.insert(k.clone(), val);
                }
            }
            Format::Cbor => {
                let v: ciborium::Value =
                    ciborium::from_reader(body).map_err(|e| format!("not CBOR: {e}"))?;
                let map = v.into_map().map_err(|_| "the body is not a CBOR map")?;
                for (k, v) in map {
                    let Ok(k) = k.into_text() else { continue };
                    let val = match v {
                        ciborium::Value::Text(s) => Val::Str(s),
                        ciborium::Value::Integer(i) => {
                            Val::Int(i64::try_from(i128::from(i)).unwrap_or(i64::MAX))
                        }
                        ciborium::Value::Float(f) => Val::Float(f),
                        ciborium::Value::Tag(1, inner) => match *inner {
                            ciborium::Value::Integer(i) => {
                                Val::TimeMs(i64::try_from(i128::from(i)).unwrap_or(i64::MAX))
                            }
                            ciborium::Value::Float(f) => Val::TimeMs(f as i64),
                            _ => Val::Other,
                        },
                        _ => Val::Other,
                    };
                    fields.insert(k, val);
                }
            }
        }
        Ok(Req { fields })
    }

    /// A string field.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.fields.get(key)? {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer field.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.fields.get(key)? {
            Val::Int(i) => Some(*i),
            Val::Float(f) if f.fract() == 0.0 => Some(*f as i64),
            _ => None,
        }
    }

    /// A timestamp field, in epoch milliseconds: JSON numbers are epoch seconds (the AWS SDK
    /// for Rust sends fractional seconds), CBOR tag 1 values are epoch milliseconds (the Java
    /// SDK v2's `SdkCborGenerator`).
    pub fn time_ms(&self, key: &str) -> Option<i64> {
        match self.fields.get(key)? {
            Val::TimeMs(ms) => Some(*ms),
            Val::Int(s) => Some(s * 1000),
            Val::Float(s) => Some((s * 1000.0).round() as i64),
            _ => None,
        }
    }
}

/// An answer (or part of one) before encoding.
#[derive(Debug, Clone)]
pub enum Out {
    /// An object with fields in this order.
    Map(Vec<(&'static str, Out)>),
    /// A list.
    Arr(Vec<Out>),
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A timestamp, epoch milliseconds.
    TimeMs(i64),
    /// Bytes: base64 in JSON, a byte string in CBOR.
    Blob(Vec<u8>),
}

impl Out {
    /// Appends the encoding of `self` to `w`.
    pub fn encode(&self, format: Format, w: &mut Vec<u8>) {
        match format {
            Format::Json => self.json(w),
            Format::Cbor => self.cbor(w),
        }
    }

    fn json(&self, w: &mut Vec<u8>) {
        match self {
            Out::Map(fields) => {
                w.push(b'{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        w.push(b',');
                    }
                    json_str(k, w);
                    w.push(b':');
                    v.json(w);
                }
                w.push(b'}');
            }
            Out::Arr(items) => {
                w.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        w.push(b',');
                    }
                    v.json(w);
                }
                w.push(b']');
            }
            Out::Str(s) => json_str(s, w),
            Out::Int(i) => w.extend_from_slice(i.to_string().as_bytes()),
            Out::Bool(b) => w.extend_from_slice(if *b { b"true" } else { b"false" }),
            // Epoch seconds with the milliseconds, as Kinesis writes them (e.g. 1.7E9 forms
            // are also accepted by the SDKs; this is the plain form).
            Out::TimeMs(ms) => w.extend_from_slice(
                format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000)).as_bytes(),
            ),
            Out::Blob(b) => {
                w.push(b'"');
                let start = w.len();
                w.resize(start + base64::encoded_len(b.len(), true).unwrap_or(0), 0);
                let n = base64::engine::general_purpose::STANDARD
                    .encode_slice(b, &mut w[start..])
                    .expect("sized above");
                w.truncate(start + n);
                w.push(b'"');
            }
        }
    }

    fn cbor(&self, w: &mut Vec<u8>) {
        match self {
            Out::Map(fields) => {
                cbor_head(5, fields.len() as u64, w);
                for (k, v) in fields {
                    cbor_head(3, k.len() as u64, w);
                    w.extend_from_slice(k.as_bytes());
                    v.cbor(w);
                }
            }
            Out::Arr(items) => {
                cbor_head(4, items.len() as u64, w);
                for v in items {
                    v.cbor(w);
                }
            }
            Out::Str(s) => {
                cbor_head(3, s.len() as u64, w);
                w.extend_from_slice(s.as_bytes());
            }
            Out::Int(i) if *i >= 0 => cbor_head(0, *i as u64, w),
            Out::Int(i) => cbor_head(1, (-1 - *i) as u64, w),
            Out::Bool(b) => w.push(if *b { 0xf5 } else { 0xf4 }),
            Out::TimeMs(ms) => {
                cbor_head(6, 1, w);
                Out::Int(*ms).cbor(w);
            }
            Out::Blob(b) => {
                cbor_head(2, b.len() as u64, w);
                w.extend_from_slice(b);
            }
        }
    }
}

fn json_str(s: &str, w: &mut Vec<u8>) {
    serde_json::to_writer(&mut *w, s).expect("writing to a Vec cannot fail");
}

/// A CBOR item head: major type `major` (0..=7) with argument `n`, shortest form.
pub fn cbor_head(major: u8, n: u64, w: &mut Vec<u8>) {
    let m = major << 5;
    match n {
        0..=23 => w.push(m | n as u8),
        24..=0xff => w.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            w.push(m | 25);
            w.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            w.push(m | 26);
            w.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            w.push(m | 27);
            w.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// An error answer: `__type` and `message`, HTTP 400 (500 for `InternalFailure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KError {
    /// The exception's name, e.g. `ResourceNotFoundException`.
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
}

impl KError {
    /// An error of this kind.
    pub fn new(kind: &'static str, message: impl Into<String>) -> KError {
        KError {
            kind,
            message: message.into(),
        }
    }

    /// `InvalidArgumentException`.
    pub fn invalid(message: impl Into<String>) -> KError {
        KError::new("InvalidArgumentException", message)
    }

    /// `ResourceNotFoundException`.
    pub fn not_found(message: impl Into<String>) -> KError {
        KError::new("ResourceNotFoundException", message)
    }

    /// The body, in `format`.
    pub fn to_out(&self) -> Out {
        Out::Map(vec![
            ("__type", Out::Str(self.kind.to_string())),
            ("message", Out::Str(self.message.clone())),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standin_cbor_heads_and_values_decode_with_ciborium() {
        let out = Out::Map(vec![
            ("a", Out::Int(-5)),
            ("b", Out::Int(70_000)),
            ("t", Out::TimeMs(1_700_000_000_123)),
            ("d", Out::Blob(vec![1, 2, 3])),
            (
                "l",
                Out::Arr(vec![Out::Bool(true), Out::Str("x".repeat(300))]),
            ),
        ]);
        let mut w = Vec::new();
        out.encode(Format::Cbor, &mut w);
        let v: ciborium::Value = ciborium::from_reader(&w[..]).unwrap();
        let m = v.into_map().unwrap();
        assert_eq!(m[0].1, ciborium::Value::Integer((-5).into()));
        assert_eq!(m[1].1, ciborium::Value::Integer(70_000.into()));
        assert_eq!(
            m[2].1,
            ciborium::Value::Tag(
                1,
                Box::new(ciborium::Value::Integer(1_700_000_000_123i64.into()))
            )
        );
        assert_eq!(m[3].1, ciborium::Value::Bytes(vec![1, 2, 3]));
        let mut j = Vec::new();
        out.encode(Format::Json, &mut j);
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(v["t"].as_f64(), Some(1_700_000_000.123));
        assert_eq!(v["d"], "AQID");
    }
}
