//! Profiling aid: repeated softmax over a (4096, 1024) f32 matrix.
fn main() {
    let m = ember::Tensor::randn(&[4096, 1024]).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..50 {
        m.softmax(1).unwrap();
    }
    println!("{:.3} ms per softmax", t.elapsed().as_secs_f64() * 1e3 / 50.0);
}
