//! `HostData` to and from the bytes a CUDA buffer holds (bool as one byte 0/1, as CUDA's `bool`).

use ember_storage::{DType, HostData};

/// The elements of `data` as bytes in memory order.
pub fn to_bytes(data: &HostData) -> Vec<u8> {
    match data {
        HostData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        HostData::U8(v) => v.clone(),
        HostData::I32(v) => bytemuck::cast_slice(v).to_vec(),
        HostData::I64(v) => bytemuck::cast_slice(v).to_vec(),
        HostData::F16(v) => bytemuck::cast_slice(v).to_vec(),
        HostData::BF16(v) => bytemuck::cast_slice(v).to_vec(),
        HostData::F32(v) => bytemuck::cast_slice(v).to_vec(),
        HostData::F64(v) => bytemuck::cast_slice(v).to_vec(),
    }
}

/// Elements of `dtype` from their bytes (any alignment).
pub fn from_bytes(dtype: DType, bytes: &[u8]) -> HostData {
    match dtype {
        DType::Bool => HostData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DType::U8 => HostData::U8(bytes.to_vec()),
        DType::I32 => HostData::I32(bytemuck::pod_collect_to_vec(bytes)),
        DType::I64 => HostData::I64(bytemuck::pod_collect_to_vec(bytes)),
        DType::F16 => HostData::F16(bytemuck::pod_collect_to_vec(bytes)),
        DType::BF16 => HostData::BF16(bytemuck::pod_collect_to_vec(bytes)),
        DType::F32 => HostData::F32(bytemuck::pod_collect_to_vec(bytes)),
        DType::F64 => HostData::F64(bytemuck::pod_collect_to_vec(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    #[test]
    fn every_dtype_round_trips_through_bytes() {
        let all = [
            HostData::Bool(vec![true, false, true]),
            HostData::U8(vec![0, 7, 255]),
            HostData::I32(vec![i32::MIN, -1, 5]),
            HostData::I64(vec![i64::MAX, 0, -9]),
            HostData::F16(vec![f16::from_f32(1.5), f16::NAN, f16::NEG_INFINITY]),
            HostData::BF16(vec![bf16::from_f32(-2.0), bf16::MAX, bf16::ZERO]),
            HostData::F32(vec![1.0, -0.0, f32::MIN_POSITIVE]),
            HostData::F64(vec![std::f64::consts::PI, f64::MAX, 1e-300]),
        ];
        for d in all {
            let bytes = to_bytes(&d);
            assert_eq!(bytes.len(), d.len() * d.dtype().size_in_bytes(), "{:?}", d.dtype());
            let back = from_bytes(d.dtype(), &bytes);
            assert_eq!(format!("{back:?}"), format!("{d:?}"));
        }
    }
}
