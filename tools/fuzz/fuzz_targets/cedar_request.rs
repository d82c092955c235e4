//! Cedar request and entity building: any request and grants (as JSON, `{"request": ..., "grants": [...]}`) decided
//! by the quickstart Cedar bundle give a decision, never a panic; a decision with errors is never an allow.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use jitgate_engine::{AuthzRequest, Bundle, Effect, Grant};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

#[derive(Deserialize)]
struct Input {
    request: AuthzRequest,
    #[serde(default)]
    grants: Vec<Grant>,
}

fn bundle() -> &'static Bundle {
    static BUNDLE: OnceLock<Bundle> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/quickstart-cedar");
        Bundle::load(&dir).unwrap_or_else(|d| panic!("the quickstart bundle: {d}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Input>(data) else {
        return;
    };
    let grants: Vec<Arc<Grant>> = input.grants.into_iter().map(Arc::new).collect();
    let decision = bundle().decide(&input.request, &grants);
    if !decision.errors.is_empty() {
        assert_ne!(decision.effect, Effect::Allow, "{decision:?}");
    }
});
