//! Fills a jitgate store with active grants before the proxy starts, so that load runs measure the proxy with a
//! realistic grant index (the proxy loads every active grant into its in-memory index at start).
//!
//! `seed_grants --store FILE|postgres://... [--count 10000] [--caller 'User::"alice"']`: `count` grants active from now for two
//! hours, three to a principal (`User::"seed-<n>"`), roles and scopes from the quickstart; the caller holds two of
//! them (payments-writer on `Service::"payments"`, db-admin on `Service::"billing"`), so the measured request
//! materializes grants too. Prints `seeded <count> grants` when committed.

use std::path::PathBuf;
use std::str::FromStr;

use jitgate_engine::{EntityRef, Grant, GrantStatus};

const ROLES: [(&str, &str); 3] = [
    ("payments-writer", "Service::\"payments\""),
    ("db-admin", "Service::\"billing\""),
    ("refund-once", "Service::\"payments\""),
];

fn run() -> Result<String, String> {
    let mut store = None;
    let mut count: usize = 10_000;
    let mut caller = "User::\"alice\"".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(k) = args.next() {
        let v = args.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--store" => store = Some(PathBuf::from(v)),
            "--count" => count = v.parse().map_err(|e| format!("--count `{v}`: {e}"))?,
            "--caller" => caller = v,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let path = store.ok_or("--store FILE|postgres://... is required")?;
    let caller = EntityRef::from_str(&caller).map_err(|e| format!("--caller: {e}"))?;
    let url = path.to_string_lossy();
    let db: Box<dyn jitgate_engine::store::GrantStore> = if url.starts_with("postgres://") {
        Box::new(
            jitgate_engine::postgres::PgStore::open_migrated(&url)
                .map_err(|e| format!("{url}: {e}"))?
                .0,
        )
    } else {
        Box::new(
            jitgate_engine::sqlite::SqliteStore::open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        )
    };
    let now = jitgate_engine::clock::now_system();
    for i in 0..count {
        let (role, scope) = ROLES[i % ROLES.len()];
        let principal = if i < 2 {
            caller.clone()
        } else {
            EntityRef::new("User", format!("seed-{}", i / 3))
        };
        let grant = Grant {
            id: format!("seed-{i:05}"),
            principal,
            role: role.to_string(),
            scope: EntityRef::from_str(scope).map_err(|e| e.to_string())?,
            starts_at: now - 60,
            expires_at: now + 7200,
            max_uses: None,
            uses: 0,
            status: GrantStatus::Active,
            approvers: vec!["User::\"bob\"".into()],
            reason: format!("load harness seed {i}"),
            break_glass: false,
            request_digest: None,
            request_id: None,
        };
        db.put_grant(&grant)
            .map_err(|e| format!("grant {i}: {e}"))?;
    }
    Ok(format!("seeded {count} grants"))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(msg) => {
            println!("{msg}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("seed_grants: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
