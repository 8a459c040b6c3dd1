//! CSV and `.npy` data sets.

use crate::TensorDataset;
use ember_autograd::{io, DType, Error, Result, Tensor};
use std::path::Path;

/// Reads a numeric CSV file into an f32 `[rows, cols]` tensor (`has_header` skips the first row).
/// Every row must have the same number of numeric fields.
pub fn read_csv(path: impl AsRef<Path>, has_header: bool) -> Result<Tensor> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(has_header)
        .from_path(path)
        .map_err(|e| Error::format(&what, e.to_string()))?;
    let (mut data, mut cols, mut rows) = (Vec::<f32>::new(), None, 0usize);
    for (line, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| Error::format(&what, e.to_string()))?;
        if *cols.get_or_insert(rec.len()) != rec.len() {
            return Err(Error::format(
                &what,
                format!("row {line} has {} fields, expected {}", rec.len(), cols.unwrap_or(0)),
            ));
        }
        for (c, field) in rec.iter().enumerate() {
            let v: f32 = field
                .trim()
                .parse()
                .map_err(|_| Error::format(&what, format!("row {line}, column {c}: {field:?} is not a number")))?;
            data.push(v);
        }
        rows += 1;
    }
    Tensor::from_vec(data, [rows, cols.unwrap_or(0)])
}

/// A CSV file as a dataset: `target_col` (if any) becomes an i64 label, the rest the features.
pub fn csv_dataset(path: impl AsRef<Path>, has_header: bool, target_col: Option<usize>) -> Result<TensorDataset> {
    let t = read_csv(path, has_header)?;
    let cols = t.shape()[1];
    match target_col {
        None => TensorDataset::new(vec![t]),
        Some(c) if c < cols => {
            let keep: Vec<i64> = (0..cols as i64).filter(|&k| k != c as i64).collect();
            let n = keep.len();
            let x = t.index_select(1, &Tensor::from_vec(keep, [n])?)?;
            let y = t.select(1, c as isize)?.to_dtype(DType::I64)?;
            TensorDataset::new(vec![x, y])
        }
        Some(c) => Err(Error::invalid("csv_dataset", format!("target column {c} out of range for {cols} columns"))),
    }
}

/// `.npy` files as a dataset (one tensor per file, rows are samples).
pub fn npy_dataset(paths: &[&Path]) -> Result<TensorDataset> {
    let ts = paths.iter().map(io::load_npy).collect::<Result<Vec<_>>>()?;
    TensorDataset::new(ts)
}
