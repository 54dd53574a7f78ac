//! Clusters of neighbouring geohash cells.

use std::collections::HashMap;

use crate::geo::Geohash;

/// The groups of mutually connected cells (touching by a side or a corner,
/// directly or through other cells of the list) with at least `min_cells`
/// cells, sorted. Cells of different precisions never touch; text that is
/// not a geohash is left out. Linear in the number of cells.
pub(crate) fn clusters(cells: &[String], min_cells: usize) -> Vec<Vec<String>> {
    let mut parsed: Vec<(usize, Geohash)> =
        cells.iter().enumerate().filter_map(|(i, c)| Geohash::parse(c).map(|g| (i, g))).collect();
    parsed.sort_by_key(|(_, g)| g.precision());
    let mut out = Vec::new();
    for same in parsed.chunk_by(|(_, a), (_, b)| a.precision() == b.precision()) {
        out.extend(clusters_of(cells, same, min_cells));
    }
    out.sort_unstable();
    out
}

/// The clusters among `parsed`, all cells of one precision.
fn clusters_of(cells: &[String], parsed: &[(usize, Geohash)], min_cells: usize) -> Vec<Vec<String>> {
    let at: HashMap<Geohash, usize> = parsed.iter().enumerate().map(|(k, (_, g))| (*g, k)).collect();

    let mut parent: Vec<usize> = (0..parsed.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while let Some(&p) = parent.get(i) {
            if p == i {
                break;
            }
            // Path halving keeps the trees shallow.
            let grand = parent.get(p).copied().unwrap_or(p);
            if let Some(slot) = parent.get_mut(i) {
                *slot = grand;
            }
            i = grand;
        }
        i
    }
    for (k, (_, cell)) in parsed.iter().enumerate() {
        for neighbour in cell.neighbours() {
            if let Some(&j) = at.get(&neighbour) {
                let (a, b) = (root(&mut parent, k), root(&mut parent, j));
                if a != b
                    && let Some(slot) = parent.get_mut(a.max(b))
                {
                    *slot = a.min(b);
                }
            }
        }
    }
    let mut groups: HashMap<usize, Vec<String>> = HashMap::new();
    for (k, (i, _)) in parsed.iter().enumerate() {
        let r = root(&mut parent, k);
        if let Some(cell) = cells.get(*i) {
            groups.entry(r).or_default().push(cell.clone());
        }
    }
    let mut out: Vec<Vec<String>> = groups.into_values().filter(|g| g.len() >= min_cells.max(1)).collect();
    for group in &mut out {
        group.sort_unstable();
        group.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn neighbours_connect_and_strangers_do_not() {
        // u4pru and its east and north-east neighbours; ezs42 far away.
        let a = Geohash::parse("u4pru").unwrap();
        let n: Vec<String> = a.neighbours().map(|g| g.to_string()).collect();
        assert_eq!(n.len(), 8);
        let list = cells(&[n[0].as_str(), "u4pru", n[7].as_str(), "ezs42"]);
        let found = clusters(&list, 2);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].len(), 3);
        assert!(clusters(&list, 4).is_empty());
        assert_eq!(clusters(&list, 1).len(), 2);
    }

    #[test]
    fn a_chain_is_one_cluster() {
        let mut cell = Geohash::parse("s0000").unwrap();
        let mut chain = vec![cell.to_string()];
        for _ in 0..5 {
            let (x, y) = cell.grid();
            cell = cell.neighbours().find(|g| g.grid() == (x + 1, y)).unwrap();
            chain.push(cell.to_string());
        }
        assert_eq!(clusters(&chain, 6).len(), 1);
    }

    #[test]
    fn wraps_across_the_antimeridian() {
        let west = Geohash::encode(0.0, -179.99, 4).unwrap();
        let east = Geohash::encode(0.0, 179.99, 4).unwrap();
        assert!(west.is_neighbour(&east));
        assert_eq!(clusters(&cells(&[west.as_str(), east.as_str()]), 2).len(), 1);
    }
}
