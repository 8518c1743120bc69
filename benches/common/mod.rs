//! What the benchmarks share (each bench is its own crate; `mod common;` brings this in).

/// The value after `name` on the command line (`cargo bench --bench X -- name N`), or
/// `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
