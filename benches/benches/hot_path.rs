//! Criterion benchmarks of the authorization hot path (route match, grant lookup and materialization, decision)
//! through `Authorizer::decide`, for Cedar and Rego, over grant-index sizes and policy counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use jitgate_benches::Scenario;
use jitgate_engine::EngineKind;

// The allocator of the shipped `jitgate` binary (tools/src/main.rs): the decision is measured as the proxy makes it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GRANTS: [usize; 3] = [10, 1_000, 10_000];
const POLICIES: [usize; 3] = [10, 100, 1_000];
const ENTITIES: [usize; 3] = [1_000, 10_000, 100_000];

fn hot_path(c: &mut Criterion) {
    for engine in [EngineKind::Cedar, EngineKind::Rego] {
        let mut group = c.benchmark_group(engine.as_str());
        group
            .sample_size(30)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1));
        for grants in GRANTS {
            for policies in POLICIES {
                // Built on first use, so that a filtered run (`-- rego/grants=10/`) does not load the other bundles.
                let mut scenario: Option<Scenario> = None;
                group.bench_function(format!("grants={grants}/policies={policies}"), |b| {
                    let s = scenario.get_or_insert_with(|| {
                        match Scenario::build(engine, grants, policies) {
                            Ok(s) => s,
                            Err(e) => panic!(
                                "{}/grants={grants}/policies={policies}: {e}",
                                engine.as_str()
                            ),
                        }
                    });
                    b.iter(|| black_box(s.decide_once().unwrap()))
                });
            }
        }
        group.finish();
    }
    // Entity data: the decision at 1,000 grants and 100 policies with 1,000 to 100,000 entities of data (users in
    // teams in teams in organizations, payments with owners; Cedar entity data, OPA data for Rego).
    for engine in [EngineKind::Cedar, EngineKind::Rego] {
        let mut group = c.benchmark_group(format!("{}-entities", engine.as_str()));
        group
            .sample_size(30)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1));
        for entities in ENTITIES {
            let mut scenario: Option<Scenario> = None;
            group.bench_function(
                format!("grants=1000/policies=100/entities={entities}"),
                |b| {
                    let s = scenario.get_or_insert_with(|| {
                        match Scenario::build_with_entities(engine, 1_000, 100, entities) {
                            Ok(s) => s,
                            Err(e) => {
                                panic!("{}-entities/entities={entities}: {e}", engine.as_str())
                            }
                        }
                    });
                    b.iter(|| black_box(s.decide_once().unwrap()))
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
