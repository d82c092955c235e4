//! The hot-path report: runs the criterion scenarios in tight loops without criterion and prints the median
//! nanoseconds per decision for each, then the figures the performance targets are stated in.
//!
//! `cargo run --release -p jitgate-benches --bin hot_path_report -- [--quick] [--engine cedar|rego] [--iters N]
//! [--reps R] [--rep-ms MS] [--strict] [--only ID-PART]`
//! (`--only grants=1000/policies=100` runs the matching scenarios alone, e.g. under a profiler; `--only entities`
//! the scenarios with entity data: 1,000, 10,000 and 100,000 entities at 1,000 grants and 100 policies).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use jitgate_benches::{BenchError, Scenario};
use jitgate_engine::EngineKind;

// The allocator of the shipped `jitgate` binary (tools/src/main.rs): the decision is measured as the proxy makes it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GRANTS: [usize; 3] = [10, 1_000, 10_000];
const POLICIES: [usize; 3] = [10, 100, 1_000];
/// Entity data sizes, measured at 1,000 grants and 100 policies.
const ENTITIES: [usize; 3] = [1_000, 10_000, 100_000];

struct Options {
    engines: Vec<EngineKind>,
    iters: u64,
    reps: usize,
    rep_budget: Duration,
    strict: bool,
    only: Option<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        engines: vec![EngineKind::Cedar, EngineKind::Rego],
        iters: 20_000,
        reps: 15,
        rep_budget: Duration::from_millis(400),
        strict: false,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => {
                o.iters = 5_000;
                o.reps = 5;
                o.rep_budget = Duration::from_millis(100);
            }
            "--strict" => o.strict = true,
            "--only" => o.only = Some(value("--only")?),
            "--engine" => {
                o.engines = match value("--engine")?.as_str() {
                    "cedar" => vec![EngineKind::Cedar],
                    "rego" => vec![EngineKind::Rego],
                    other => return Err(format!("--engine: `{other}` is not cedar or rego")),
                }
            }
            "--iters" => {
                o.iters = value("--iters")?
                    .parse()
                    .map_err(|e| format!("--iters: {e}"))?
            }
            "--reps" => {
                o.reps = value("--reps")?
                    .parse()
                    .map_err(|e| format!("--reps: {e}"))?
            }
            "--rep-ms" => {
                o.rep_budget = Duration::from_millis(
                    value("--rep-ms")?
                        .parse()
                        .map_err(|e| format!("--rep-ms: {e}"))?,
                )
            }
            "-h" | "--help" => {
                return Err("usage: hot_path_report [--quick] [--engine cedar|rego] [--iters N] [--reps R] [--rep-ms MS] [--strict] [--only ID-PART]".into());
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if o.iters == 0 || o.reps == 0 {
        return Err("--iters and --reps must be positive".into());
    }
    Ok(o)
}

/// Per-repetition nanoseconds per decision, sorted.
struct Measured {
    per_rep: Vec<f64>,
    iters: u64,
}

impl Measured {
    fn median(&self) -> f64 {
        let n = self.per_rep.len();
        match (self.per_rep.get(n / 2), n % 2) {
            (Some(m), 1) => *m,
            (Some(hi), _) => (hi + self.per_rep.get(n / 2 - 1).copied().unwrap_or(*hi)) / 2.0,
            (None, _) => f64::NAN,
        }
    }
    fn min(&self) -> f64 {
        self.per_rep.first().copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.per_rep.last().copied().unwrap_or(f64::NAN)
    }
}

fn measure(s: &Scenario, o: &Options) -> Result<Measured, BenchError> {
    // Warm-up: caches, allocator, branch predictors; also sizes the loop to the time budget of one repetition.
    let warm = Instant::now();
    let mut warm_n = 0u64;
    while warm_n < 1_000 || warm.elapsed() < Duration::from_millis(200) {
        black_box(s.decide_once()?);
        warm_n += 1;
    }
    let per = warm.elapsed().as_secs_f64() / warm_n as f64;
    let fit = (o.rep_budget.as_secs_f64() / per) as u64;
    let iters = o.iters.min(fit.max(200));
    let mut per_rep = Vec::with_capacity(o.reps);
    for _ in 0..o.reps {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(s.decide_once()?);
        }
        per_rep.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    per_rep.sort_by(f64::total_cmp);
    Ok(Measured { per_rep, iters })
}

fn us(ns: f64) -> String {
    format!("{:.2} µs", ns / 1_000.0)
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut medians: BTreeMap<(&'static str, usize, usize, usize), f64> = BTreeMap::new();
    println!(
        "{:<50} {:>12} {:>12} {:>12} {:>8} {:>5}",
        "scenario", "median", "min", "max", "iters", "reps"
    );
    let mut scenarios: Vec<(EngineKind, usize, usize, usize)> = Vec::new();
    for engine in &o.engines {
        for grants in GRANTS {
            for policies in POLICIES {
                scenarios.push((*engine, grants, policies, 0));
            }
        }
        for entities in ENTITIES {
            scenarios.push((*engine, 1_000, 100, entities));
        }
    }
    for (engine, grants, policies, entities) in scenarios {
        let mut id = format!("{}/grants={grants}/policies={policies}", engine.as_str());
        if entities > 0 {
            id.push_str(&format!("/entities={entities}"));
        }
        if o.only
            .as_ref()
            .is_some_and(|part| !id.contains(part.as_str()))
        {
            continue;
        }
        let result = Scenario::build_with_entities(engine, grants, policies, entities)
            .and_then(|s| measure(&s, &o).map(|m| (s, m)));
        match result {
            Ok((s, m)) => {
                println!(
                    "{:<50} {:>12} {:>12} {:>12} {:>8} {:>5}",
                    s.id(),
                    us(m.median()),
                    us(m.min()),
                    us(m.max()),
                    m.iters,
                    m.per_rep.len()
                );
                medians.insert((engine.as_str(), grants, policies, entities), m.median());
            }
            Err(e) => {
                eprintln!("{id}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }

    println!();
    println!(
        "{:<58} {:>12} {:>10} {:>6}",
        "target", "measured", "limit", ""
    );
    let mut missed = 0;
    let mut line = |what: String, measured: String, limit: String, ok: bool| {
        if measured.contains("NaN") {
            return;
        }
        if !ok {
            missed += 1;
        }
        println!(
            "{what:<58} {measured:>12} {limit:>10} {:>6}",
            if ok { "ok" } else { "MISS" }
        );
    };
    for engine in &o.engines {
        let e = engine.as_str();
        let get = |g: usize, p: usize| medians.get(&(e, g, p, 0)).copied().unwrap_or(f64::NAN);
        let with_data = |n: usize| {
            medians
                .get(&(e, 1_000, 100, n))
                .copied()
                .unwrap_or(f64::NAN)
        };
        let limit_us = match engine {
            EngineKind::Cedar => 10.0,
            EngineKind::Rego => 40.0,
        };
        let base = get(1_000, 100);
        // With `--only` some figures are missing: NaN compares false, so `line` skips them below.
        line(
            format!("{e} N=1000 M=100 median"),
            us(base),
            format!("{limit_us} µs"),
            base <= limit_us * 1_000.0,
        );
        for p in POLICIES {
            let r = get(10_000, p) / get(10, p);
            line(
                format!("{e} growth N=10 -> N=10000 (M={p})"),
                format!("{r:.2}x"),
                "1.5x".into(),
                r <= 1.5,
            );
        }
        for g in GRANTS {
            let r = get(g, 1_000) / get(g, 10);
            line(
                format!("{e} growth M=10 -> M=1000 (N={g})"),
                format!("{r:.2}x"),
                "3x".into(),
                r <= 3.0,
            );
        }
        if *engine == EngineKind::Cedar {
            let t = with_data(10_000);
            line(
                format!("{e} N=1000 M=100 with 10,000 entities median"),
                us(t),
                "7 µs".into(),
                t <= 7_000.0,
            );
        }
        let r = with_data(100_000) / with_data(1_000);
        line(
            format!("{e} growth 1,000 -> 100,000 entities (N=1000 M=100)"),
            format!("{r:.2}x"),
            "1.5x".into(),
            r <= 1.5,
        );
    }
    if o.strict && missed > 0 {
        eprintln!("{missed} target(s) missed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
