//! Request bodies → (N, *sample) f32 inputs: raw little-endian f32 and JSON, validated alike
//! (whole samples, every value finite as an f32), and the answer's JSON.
//!
//! JSON bodies are parsed by a serde visitor that writes numbers straight into a `Vec<f32>`
//! while it tracks the nesting shape, so a body costs its bytes plus 4 bytes a number —
//! not a `serde_json::Value` tree (~50 bytes a number) built before the shape is known.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Value};

use crate::tensor::Tensor;
use crate::{Error, Result};

/// Arg-max of each row of (N, classes) logits.
pub fn argmax(logits: &Tensor) -> Result<Vec<usize>> {
    let (n, c) = logits.dims2("argmax")?;
    let v = logits.to_f64_vec();
    Ok((0..n).map(|i| argmax_row(&v[i * c..(i + 1) * c])).collect())
}

pub(crate) fn argmax_row(row: &[f64]) -> usize {
    let mut best = 0;
    for (j, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = j;
        }
    }
    best
}

/// Logits and arg-max as JSON: `{"logits": [[…]…], "argmax": […]}`.
pub fn prediction_json(logits: &Tensor) -> Result<Value> {
    let (n, c) = logits.dims2("prediction")?;
    Ok(rows_json(&logits.to_f64_vec(), n, c))
}

pub(crate) fn rows_json(v: &[f64], n: usize, c: usize) -> Value {
    let rows: Vec<&[f64]> = (0..n).map(|i| &v[i * c..(i + 1) * c]).collect();
    let arg: Vec<usize> = rows.iter().map(|r| argmax_row(r)).collect();
    json!({ "logits": rows, "argmax": arg })
}

/// The index of the first value that is not finite, if any. One rule for both body formats:
/// a NaN or infinity would otherwise reach the model and come back as `null` logits.
fn check_finite(v: &[f32], sample: &[usize]) -> Result<()> {
    let Some(i) = v.iter().position(|x| !x.is_finite()) else {
        return Ok(());
    };
    let per: usize = sample.iter().product::<usize>().max(1);
    Err(Error::invalid(
        "input",
        format!(
            "value {} (sample {}, element {}) is {}: inputs must be finite",
            i,
            i / per,
            i % per,
            v[i]
        ),
    ))
}

/// An (N, *sample) f32 tensor from raw little-endian f32 bytes; N is inferred. Every value
/// must be finite.
pub fn input_from_f32_le(bytes: &[u8], sample: &[usize]) -> Result<Tensor> {
    let (v, shape) = f32_le_values(bytes, sample)?;
    Tensor::from_vec(v, &shape)
}

pub(crate) fn f32_le_values(bytes: &[u8], sample: &[usize]) -> Result<(Vec<f32>, Vec<usize>)> {
    let per: usize = sample.iter().product();
    let unit = per.saturating_mul(4);
    if bytes.is_empty() || unit == 0 || bytes.len() % unit != 0 {
        return Err(Error::invalid(
            "input",
            format!(
                "{} bytes is not a whole number of samples of shape {sample:?} ({unit} bytes of f32 each)",
                bytes.len()
            ),
        ));
    }
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    check_finite(&v, sample)?;
    let mut shape = vec![bytes.len() / unit];
    shape.extend_from_slice(sample);
    Ok((v, shape))
}

/// An (N, *sample) f32 tensor from JSON: a nested array of shape (N, *sample) or
/// (*sample), or an object `{"input": array}`.
pub fn input_from_json(v: &Value, sample: &[usize]) -> Result<Tensor> {
    let (data, shape) =
        decode_json(v, sample, usize::MAX, &mut false).map_err(|e| json_error(&e))?;
    Tensor::from_vec(data, &shape)
}

/// [`input_from_json`] from the body's bytes, parsed straight into f32 (see the module
/// doc); at most `max_samples` samples are accepted.
pub fn input_from_json_bytes(bytes: &[u8], sample: &[usize], max_samples: usize) -> Result<Tensor> {
    let (data, shape) = json_values(bytes, sample, max_samples).map_err(|e| e.1)?;
    Tensor::from_vec(data, &shape)
}

/// The values and (N, *sample) shape of a JSON body; the error says whether the body held
/// more than `max_samples` samples (an over-limit answer, not a malformed body).
pub(crate) fn json_values(
    bytes: &[u8],
    sample: &[usize],
    max_samples: usize,
) -> std::result::Result<(Vec<f32>, Vec<usize>), (bool, Error)> {
    let mut over = false;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let r = decode_json(&mut de, sample, max_samples, &mut over).and_then(|x| de.end().map(|()| x));
    r.map_err(|e| (over, json_error(&e)))
}

fn json_error(e: &serde_json::Error) -> Error {
    let what = if e.is_syntax() || e.is_eof() {
        "body is not valid JSON: "
    } else {
        ""
    };
    Error::invalid("input", format!("{what}{e}"))
}

fn decode_json<'de, D: Deserializer<'de, Error = serde_json::Error>>(
    de: D,
    sample: &[usize],
    max_samples: usize,
    over: &mut bool,
) -> std::result::Result<(Vec<f32>, Vec<usize>), serde_json::Error> {
    use serde::de::Error as _;
    let per: usize = sample.iter().product();
    let mut w = Walker {
        out: Vec::new(),
        dims: Vec::new(),
        leaf_depth: None,
        // one sample more than allowed, so the over-limit error names the limit
        max_values: max_samples.saturating_add(1).saturating_mul(per.max(1)),
        max_samples,
        over_limit: false,
        at: Vec::new(),
        max_depth: sample.len() + 1,
    };
    let walked = Node {
        w: &mut w,
        depth: 0,
        top: true,
    }
    .deserialize(de);
    *over = w.over_limit;
    walked?;
    let shape: Vec<usize> = w.dims.iter().map(|d| d.unwrap_or(0)).collect();
    let full = if shape == sample {
        let mut s = vec![1];
        s.extend_from_slice(sample);
        s
    } else if shape.len() == sample.len() + 1 && shape[1..] == *sample && shape[0] > 0 {
        shape.clone()
    } else {
        return Err(serde_json::Error::custom(format!(
            "JSON array has shape {shape:?}; expected (N, {sample:?}) or {sample:?}"
        )));
    };
    if full[0] > max_samples {
        *over = true;
        return Err(serde_json::Error::custom(format!(
            "batch of {} samples exceeds the limit of {max_samples}",
            full[0]
        )));
    }
    // (finiteness was checked number by number)
    Ok((w.out, full))
}

/// State of one JSON walk: the numbers so far, the length of every nesting level (the first
/// array seen at a depth fixes it, later ones must match) and where the numbers sit.
struct Walker {
    out: Vec<f32>,
    dims: Vec<Option<usize>>,
    leaf_depth: Option<usize>,
    max_values: usize,
    max_samples: usize,
    over_limit: bool,
    at: Vec<usize>,
    max_depth: usize,
}

struct Node<'a> {
    w: &'a mut Walker,
    depth: usize,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Node<'_> {
    fn number<E: serde::de::Error>(self, x: f64) -> std::result::Result<(), E> {
        let w = self.w;
        match w.leaf_depth {
            None => w.leaf_depth = Some(self.depth),
            Some(d) if d != self.depth => {
                return Err(E::custom(format!(
                    "element {:?} is a number at nesting depth {}, others at depth {d}",
                    w.at, self.depth
                )))
            }
            Some(_) => {}
        }
        if w.out.len() >= w.max_values {
            w.over_limit = true;
            return Err(E::custom(format!(
                "more numbers than {} samples hold (the batch limit)",
                w.max_samples
            )));
        }
        let f = x as f32;
        if !f.is_finite() {
            return Err(E::custom(format!(
                "element {:?} ({x}) is not finite as an f32: inputs must be finite",
                w.at
            )));
        }
        w.out.push(f);
        Ok(())
    }
}

impl Node<'_> {
    fn not_a_number<E: serde::de::Error>(self, what: &str) -> std::result::Result<(), E> {
        Err(E::custom(format!(
            "element {:?} is {what}, not a number",
            self.w.at
        )))
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.top {
            write!(
                f,
                "a nested array of numbers or an object {{\"input\": array}}"
            )
        } else {
            write!(f, "a number or a nested array of numbers")
        }
    }

    fn visit_f64<E: serde::de::Error>(self, x: f64) -> std::result::Result<(), E> {
        self.number(x)
    }
    fn visit_i64<E: serde::de::Error>(self, x: i64) -> std::result::Result<(), E> {
        self.number(x as f64)
    }
    fn visit_u64<E: serde::de::Error>(self, x: u64) -> std::result::Result<(), E> {
        self.number(x as f64)
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> std::result::Result<(), E> {
        self.not_a_number("a string")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> std::result::Result<(), E> {
        self.not_a_number("a boolean")
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<(), E> {
        self.not_a_number("null")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        use serde::de::Error as _;
        let (w, depth) = (self.w, self.depth);
        if w.leaf_depth.is_some_and(|d| depth >= d) || depth >= w.max_depth {
            return Err(A::Error::custom(format!(
                "element {:?} is an array where a number is expected",
                w.at
            )));
        }
        let mut n = 0usize;
        loop {
            w.at.push(n);
            let more = seq.next_element_seed(Node {
                w: &mut *w,
                depth: depth + 1,
                top: false,
            })?;
            w.at.pop();
            if more.is_none() {
                break;
            }
            n += 1;
        }
        if w.dims.len() <= depth {
            w.dims.resize(depth + 1, None);
        }
        match w.dims[depth] {
            None => w.dims[depth] = Some(n),
            Some(m) if m != n => {
                return Err(A::Error::custom(format!(
                    "ragged JSON array: element {:?} has {n} entries, expected {m}",
                    w.at
                )))
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        use serde::de::Error as _;
        if !self.top {
            return Err(A::Error::custom(format!(
                "element {:?} is an object, not a number",
                self.w.at
            )));
        }
        let mut seen = false;
        while let Some(k) = map.next_key::<String>()? {
            if k == "input" {
                if seen {
                    return Err(A::Error::custom("`input` given twice"));
                }
                seen = true;
                map.next_value_seed(Node {
                    w: &mut *self.w,
                    depth: 0,
                    top: false,
                })?;
            } else {
                // other keys are ignored, as before (clients may send ids or metadata)
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !seen {
            return Err(A::Error::custom("JSON object without an `input` array"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: [usize; 2] = [2, 3];

    #[test]
    fn json_bytes_and_value_decode_alike() {
        for (body, shape) in [
            ("[[1, 2, 3], [4, 5, 6]]", vec![1, 2, 3]),
            (
                "[[[1, 2, 3], [4, 5, 6]], [[0, 0, 0], [1e-3, -2, 7]]]",
                vec![2, 2, 3],
            ),
            (
                "{\"id\": [1, {}], \"input\": [[1, 2, 3], [4, 5, 6]]}",
                vec![1, 2, 3],
            ),
        ] {
            let a = input_from_json_bytes(body.as_bytes(), &SAMPLE, 8).unwrap();
            let v: Value = serde_json::from_str(body).unwrap();
            let b = input_from_json(&v, &SAMPLE).unwrap();
            assert_eq!(a.shape(), &shape[..]);
            assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        }
    }

    #[test]
    fn json_errors_name_the_problem_and_the_limit() {
        let e = |body: &str| json_values(body.as_bytes(), &SAMPLE, 2).err().unwrap();
        let (over, err) = e("[[[1,2,3],[4,5,6]],[[1,2,3],[4,5,6]],[[1,2,3],[4,5,6]]]");
        assert!(over, "{err}");
        assert!(err.to_string().contains("limit of 2"), "{err}");
        // the cap stops the walk before the whole body is stored
        let big = format!("[{}]", vec!["[[1,2,3],[4,5,6]]"; 1000].join(","));
        let (over, err) = e(&big);
        assert!(over && err.to_string().contains("batch limit"), "{err}");
        for (body, want) in [
            ("[[1, 2, 3], [4, 5]]", "ragged"),
            ("[[1, 2, 3], [4, 5, [6]]]", "array where a number"),
            ("[[1, 2, 3], [4, 5, true]]", "[1, 2] is a boolean"),
            ("[[1, 2, 3]]", "shape [1, 3]"),
            ("[]", "shape [0]"),
            ("[[1, 2, 3], [4, 5, 6]] x", "not valid JSON"),
            ("[[1, 2, 3], [4, 5, 1e300]]", "not finite as an f32"),
        ] {
            let (over, err) = e(body);
            assert!(!over, "{body}");
            assert!(err.to_string().contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn f32_le_rejects_partial_samples_and_non_finite() {
        let bytes: Vec<u8> = [1f32, 2., 3., 4., 5., f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let e = input_from_f32_le(&bytes, &SAMPLE)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("value 5 (sample 0, element 5) is NaN"), "{e}");
        let e = input_from_f32_le(&bytes[..20], &SAMPLE)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a whole number of samples"), "{e}");
        let x = input_from_f32_le(&bytes[..20].repeat(0), &SAMPLE);
        assert!(x.is_err());
    }
}
