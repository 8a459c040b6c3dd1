//! `torch.save` files written by PyTorch (`tests/fixtures/torch/make_pt.py`; the expected values
//! are what PyTorch's own `torch.load(weights_only=True)` read back) load into the same tensors;
//! code in a file, the legacy format, truncation and corruption are refused without a panic.

use ember::io::{load_torch, load_torch_bytes, load_torch_state_dict, TorchValue};
use ember::nn::layers::{BatchNorm2d, Conv2d, Linear};
use ember::nn::{load_state_dict, ModuleExt};
use ember::{DType, Tensor};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/torch").join(name)
}

fn expected(file: &str) -> Vec<(String, serde_json::Value)> {
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    all[file].as_array().unwrap().iter().map(|v| (v["key"].as_str().unwrap().to_string(), v.clone())).collect()
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "float32",
        DType::F64 => "float64",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::I64 => "int64",
        DType::I32 => "int32",
        DType::U8 => "uint8",
        DType::Bool => "bool",
    }
}

/// Every tensor PyTorch read back is there, in PyTorch's order, with its dtype, shape and values
/// to the bit (all dtypes convert to f64 exactly; the int64 2^40 too).
fn check_against_torch(file: &str, got: &[(String, Tensor)]) {
    let want = expected(file);
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    let want_keys: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, want_keys, "{file}");
    for ((k, t), (_, w)) in got.iter().zip(&want) {
        assert_eq!(dtype_name(t.dtype()), w["dtype"].as_str().unwrap(), "{file} {k}");
        let shape: Vec<usize> = w["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape(), &shape[..], "{file} {k}");
        let vals: Vec<f64> = w["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let got_vals = t.to_vec_f64().unwrap();
        assert_eq!(got_vals.len(), vals.len(), "{file} {k}");
        for (a, b) in got_vals.iter().zip(&vals) {
            assert_eq!(a.to_bits(), b.to_bits(), "{file} {k}: {got_vals:?} vs {vals:?}");
        }
    }
}

#[test]
fn a_state_dict_loads_as_pytorch_reads_it_and_into_an_ember_model() {
    let sd = load_torch_state_dict(fixture("state_dict.pt")).unwrap();
    check_against_torch("state_dict.pt", &sd);

    #[derive(ember::nn::Module)]
    struct Net {
        conv: Conv2d,
        bn: BatchNorm2d,
        fc: Linear,
    }
    let net =
        Net { conv: Conv2d::new(1, 2, 3).unwrap(), bn: BatchNorm2d::new(2).unwrap(), fc: Linear::new(4, 3).unwrap() };
    let report = load_state_dict(&net, &sd, true).unwrap();
    assert!(report.missing_keys.is_empty() && report.unexpected_keys.is_empty());
    let loaded = net.state_dict();
    for ((k, a), (k2, b)) in loaded.iter().zip(&sd) {
        assert_eq!(k, k2);
        assert_eq!(a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap(), "{k}");
    }
}

#[test]
fn nested_checkpoints_with_views_plain_values_and_every_dtype_load_in_protocols_2_and_4() {
    for file in ["mixed.pt", "mixed_proto4.pt"] {
        let v = load_torch(fixture(file)).unwrap();
        check_against_torch("mixed.pt", &v.tensors());
        assert!(matches!(v.get("epoch"), Some(TorchValue::Int(7))), "{file}");
        assert!(matches!(v.get("lr"), Some(TorchValue::Float(x)) if *x == 0.001));
        assert!(matches!(v.get("name"), Some(TorchValue::Str(s)) if s == "run-1"));
        let Some(TorchValue::List(flags)) = v.get("flags") else { panic!("flags") };
        assert!(
            matches!(flags[..], [TorchValue::Bool(true), TorchValue::None, TorchValue::Tuple(ref t)] if t.len() == 2)
        );
        let Some(TorchValue::Tensor(p)) = v.get("param") else { panic!("param") };
        assert!(p.requires_grad(), "an nn.Parameter keeps requires_grad");
        let Some(TorchValue::Tensor(t)) = v.get("transposed") else { panic!("transposed") };
        assert!(t.is_contiguous(), "views come back dense");
    }
}

#[test]
fn code_in_a_file_is_refused_by_name_and_never_run() {
    let e = load_torch(fixture("evil.pt")).unwrap_err().to_string();
    assert!(e.contains("system") && e.contains("refuses global"), "{e}");
}

#[test]
fn the_legacy_format_and_other_files_are_refused_with_the_reason() {
    let e = load_torch(fixture("legacy.pt")).unwrap_err().to_string();
    assert!(e.contains("legacy"), "{e}");
    let e = load_torch(fixture("make_pt.py")).unwrap_err().to_string();
    assert!(e.contains("not a torch.save file"), "{e}");
    assert!(load_torch(fixture("missing.pt")).is_err());
}

#[test]
fn truncated_and_corrupted_files_are_errors_not_panics() {
    let bytes = std::fs::read(fixture("mixed.pt")).unwrap();
    for cut in (0..bytes.len()).step_by(37) {
        assert!(load_torch_bytes(&bytes[..cut], "cut").is_err(), "cut at {cut}");
    }
    // flip bytes inside the pickle (stored uncompressed, so its bytes are in the archive as-is;
    // zip's CRC check catches most flips, the rest reach the pickle reader)
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut accepted = 0;
    for _ in 0..400 {
        let mut b = bytes.clone();
        for _ in 0..3 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = (rng % b.len() as u64) as usize;
            b[i] ^= (rng >> 32) as u8 | 1;
        }
        accepted += load_torch_bytes(&b, "flipped").is_ok() as usize;
    }
    assert!(accepted < 400, "corruption is noticed");
}

#[test]
fn a_pickle_that_would_exhaust_memory_or_nest_forever_is_refused() {
    // a list appended to itself: converting it would recurse forever
    let cyclic = b"\x80\x02]q\x00h\x00a.";
    let e = ember_pickle_only(cyclic).unwrap_err().to_string();
    assert!(e.contains("nested deeper"), "{e}");
    // a string whose length runs past the end
    let e = ember_pickle_only(b"\x80\x02X\xff\xff\xff\x7fab.").unwrap_err().to_string();
    assert!(e.contains("runs past the end"), "{e}");
    // an unknown opcode (INST, which would call a class)
    assert!(ember_pickle_only(b"\x80\x02i__builtin__\nobject\n.").is_err());
}

/// A `torch.save` archive around a hand-written pickle, to reach the reader directly.
fn ember_pickle_only(pickle: &[u8]) -> ember::Result<TorchValue> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(vec![]);
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts: zip::write::SimpleFileOptions = Default::default();
        z.start_file("archive/data.pkl", opts.compression_method(zip::CompressionMethod::Stored)).unwrap();
        z.write_all(pickle).unwrap();
        z.finish().unwrap();
    }
    load_torch_bytes(buf.get_ref(), "hand-written")
}
