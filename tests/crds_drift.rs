//! The committed CRDs (`crds/` and the Helm chart's `crds/`) are exactly what `mandate crds`
//! generates from the Rust types.

use std::collections::BTreeMap;
use std::path::Path;

fn committed(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                std::fs::read_to_string(&path).expect("readable CRD file"),
            )
        })
        .collect()
}

fn assert_matches_generated(relative: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let generated: BTreeMap<String, String> = mandate::cli::crds::files()
        .expect("CRDs generate")
        .into_iter()
        .map(|f| (f.file_name, f.yaml))
        .collect();
    let committed = committed(&dir);
    assert_eq!(
        committed.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "{relative} holds other files than `mandate crds` generates: run `make crds` and commit"
    );
    for (name, yaml) in &generated {
        assert!(
            committed[name] == *yaml,
            "{relative}/{name} differs from what `mandate crds` generates: run `make crds` and commit"
        );
    }
}

#[test]
fn committed_crds_match_the_rust_types() {
    assert_matches_generated("crds");
}

#[test]
fn the_helm_charts_crds_match_the_rust_types() {
    assert_matches_generated("charts/mandate/crds");
}
