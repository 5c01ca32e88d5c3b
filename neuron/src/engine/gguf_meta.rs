//! Typed reads of GGUF metadata that tolerate the integer widths different writers use.

use candle_core::quantized::gguf_file::{Content, Value};

pub fn get<'a>(ct: &'a Content, key: &str) -> Option<&'a Value> {
    ct.metadata.get(key)
}

pub fn string(ct: &Content, key: &str) -> Option<String> {
    get(ct, key).and_then(|v| v.to_string().ok()).cloned()
}

pub fn value_u64(v: &Value) -> Option<u64> {
    Some(match v {
        Value::U8(v) => *v as u64,
        Value::I8(v) => u64::try_from(*v).ok()?,
        Value::U16(v) => *v as u64,
        Value::I16(v) => u64::try_from(*v).ok()?,
        Value::U32(v) => *v as u64,
        Value::I32(v) => u64::try_from(*v).ok()?,
        Value::U64(v) => *v,
        Value::I64(v) => u64::try_from(*v).ok()?,
        _ => return None,
    })
}

pub fn u64(ct: &Content, key: &str) -> Option<u64> {
    get(ct, key).and_then(value_u64)
}

pub fn bool(ct: &Content, key: &str) -> Option<bool> {
    get(ct, key).and_then(|v| v.to_bool().ok())
}

pub fn strings(ct: &Content, key: &str) -> Option<Vec<String>> {
    let arr = get(ct, key)?.to_vec().ok()?;
    arr.iter().map(|v| v.to_string().ok().cloned()).collect()
}

pub fn u64s(ct: &Content, key: &str) -> Option<Vec<u64>> {
    let arr = get(ct, key)?.to_vec().ok()?;
    arr.iter().map(value_u64).collect()
}

pub fn f32s(ct: &Content, key: &str) -> Option<Vec<f32>> {
    let arr = get(ct, key)?.to_vec().ok()?;
    arr.iter().map(|v| v.to_f32().ok()).collect()
}
