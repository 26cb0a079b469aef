//! The row hash of a distribution column: value -> `i32`.
//!
//! Step in the flow: INSERT and COPY route each row to the shard whose hash
//! range holds [`hash_array`] of its distribution column; the planner hashes
//! the literals of `col = v` / `col IN (...)` the same way to prune shards.
//! Every node must agree forever, so the function is our own and fixed:
//! integers of every width (and dates, timestamps) hash their value as an
//! `i64` (so `int4` and `int8` columns co-locate), strings and bytes hash
//! their bytes, anything else hashes its text form. NULL hashes to 0.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    TimestampMicrosecondType, UInt16Type, UInt32Type, UInt8Type,
};
use datafusion::arrow::error::ArrowError;

/// Finalizer of MurmurHash3 (64-bit): spreads consecutive keys evenly.
fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn fold(h: u64) -> i32 {
    ((h >> 32) ^ h) as u32 as i32
}

/// Hash of an integer value.
pub fn hash_i64(v: i64) -> i32 {
    fold(mix64(v as u64))
}

/// Hash of a byte string (FNV-1a, then mixed).
pub fn hash_bytes(b: &[u8]) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fold(mix64(h))
}

macro_rules! ints {
    ($arr:expr, $t:ty) => {
        $arr.as_primitive::<$t>()
            .iter()
            .map(|v| v.map_or(0, |v| hash_i64(v as i64)))
            .collect()
    };
}

/// The hash of every value of `arr`.
pub fn hash_array(arr: &ArrayRef) -> Result<Vec<i32>, ArrowError> {
    Ok(match arr.data_type() {
        DataType::Int8 => ints!(arr, Int8Type),
        DataType::Int16 => ints!(arr, Int16Type),
        DataType::Int32 => ints!(arr, Int32Type),
        DataType::Int64 => ints!(arr, Int64Type),
        DataType::UInt8 => ints!(arr, UInt8Type),
        DataType::UInt16 => ints!(arr, UInt16Type),
        DataType::UInt32 => ints!(arr, UInt32Type),
        DataType::Date32 => ints!(arr, Date32Type),
        DataType::Date64 => ints!(arr, Date64Type),
        DataType::Timestamp(_, _) => {
            let micros = cast(
                arr,
                &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
            )?;
            ints!(micros, TimestampMicrosecondType)
        }
        DataType::Utf8 => arr
            .as_string::<i32>()
            .iter()
            .map(|v| v.map_or(0, |s| hash_bytes(s.as_bytes())))
            .collect(),
        DataType::LargeUtf8 => arr
            .as_string::<i64>()
            .iter()
            .map(|v| v.map_or(0, |s| hash_bytes(s.as_bytes())))
            .collect(),
        DataType::Utf8View => arr
            .as_string_view()
            .iter()
            .map(|v| v.map_or(0, |s| hash_bytes(s.as_bytes())))
            .collect(),
        DataType::Binary => arr
            .as_binary::<i32>()
            .iter()
            .map(|v| v.map_or(0, hash_bytes))
            .collect(),
        _ => {
            let text = cast(arr, &DataType::Utf8)?;
            return hash_array(&text);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn widths_agree_and_values_spread() {
        let a: ArrayRef = Arc::new(Int32Array::from(vec![1, 2, 3]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        assert_eq!(hash_array(&a).unwrap(), hash_array(&b).unwrap());
        // Consecutive keys land in all four quarters of the hash space.
        let keys: ArrayRef = Arc::new(Int64Array::from((0..1000).collect::<Vec<i64>>()));
        let mut quarters = [0usize; 4];
        for h in hash_array(&keys).unwrap() {
            quarters[crate::meta::placement::shard_index_for_hash(h, 4) as usize] += 1;
        }
        for q in quarters {
            assert!((200..300).contains(&q), "{quarters:?}");
        }
        let s: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
        let h = hash_array(&s).unwrap();
        assert_ne!(h[0], h[1]);
        assert_eq!(h[0], hash_bytes(b"a"));
    }
}
