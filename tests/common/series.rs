//! The real measured series in `../shared/data/timeseries`.

use edgestream::time::Timestamp;

/// The directory of the fixtures.
pub(crate) const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/timeseries");

/// Every `*.csv` fixture: (file name, points as (ns since the epoch, value)).
pub(crate) fn all() -> Vec<(String, Vec<(i64, f64)>)> {
    let Ok(entries) = std::fs::read_dir(DIR) else {
        panic!("{DIR} not found: the real-data fixtures live in ../shared/data");
    };
    let mut files: Vec<_> =
        entries.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "csv")).collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {DIR}");
    files.iter().map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), load(p))).collect()
}

/// `timestamp,value` rows with a header; naive timestamps read as UTC.
pub(crate) fn load(path: &std::path::Path) -> Vec<(i64, f64)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (ts, v) = l.split_once(',').unwrap();
            let ts: Timestamp = format!("{}Z", ts.trim().replace(' ', "T")).parse().unwrap();
            (ts.as_nanos(), v.trim().parse().unwrap())
        })
        .collect()
}
