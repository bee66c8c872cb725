//! One admission review with 10,000 identities in the snapshot: the realistic ~5 KB pod review
//! of tests/fixtures/admission/pod-create.json in; time per review out, reviewed alone, and
//! parsed, reviewed and answered. Run with `cargo bench --bench admission` (part of
//! `make bench-admission`); the synthetic snapshot comes with the `fixtures` feature, which the
//! package's dev-dependency on itself turns on.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use criterion::{Criterion, criterion_group, criterion_main};
use mandate::admission::{AdmissionConfig, Decision, MandateReviewer, Reviewer, synthetic};
use mandate::webhook::server::{parse_review, respond};

fn admission(c: &mut Criterion) {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/admission/pod-create.json"
    ))
    .expect("the pod review fixture exists");
    let snapshot = synthetic::snapshot(10_000);
    let reviewer = MandateReviewer::new(
        Arc::new(ArcSwapOption::from_pointee(snapshot)),
        AdmissionConfig::default(),
    );
    let request = parse_review(&body).expect("the fixture is a valid AdmissionReview");
    assert_eq!(
        reviewer.review(&request).decision(),
        Some(Decision::Allowed),
        "the benchmark pod must be admitted"
    );

    c.bench_function("decide a 5 KB pod review (10k identities)", |b| {
        b.iter(|| reviewer.review(std::hint::black_box(&request)))
    });
    c.bench_function(
        "parse, decide and answer a 5 KB pod review (10k identities)",
        |b| {
            b.iter(|| {
                let request = parse_review(std::hint::black_box(&body)).expect("valid");
                let verdict = reviewer.review(&request);
                serde_json::to_vec(&respond(&request, &verdict)).expect("serializes")
            })
        },
    );
}

criterion_group!(benches, admission);
criterion_main!(benches);
