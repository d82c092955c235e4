//! One benchmark scenario: a synthetic bundle of M policies, an index of N active grants spread over many
//! principals (the caller holding 3), and the measured request, `POST /payments` by a payments writer.

use std::path::Path;
use std::sync::Arc;

use jitgate_engine::store::{MemStore, StoreError};
use jitgate_engine::{
    Authorizer, AuthzRequest, Bundle, Clock, Context, Decision, Diagnostics, Effect, EngineKind,
    EntityRef, Grant, GrantStatus, Principal, UnixTime,
};

use crate::synth::{self, SynthError};

/// The request's time: Wednesday 2025-01-15 10:00:00 UTC (business hours).
pub const REQUEST_TIME: UnixTime = 1_736_935_200;

/// The host the measured request is sent to.
const HOST: &str = "api.example.com";

/// Why a scenario could not be set up, or decided something other than the expected allow.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The synthetic bundle could not be written.
    #[error(transparent)]
    Synth(#[from] SynthError),
    /// The temporary directory could not be made.
    #[error("temporary directory: {0}")]
    TempDir(std::io::Error),
    /// The synthetic bundle did not load.
    #[error("synthetic bundle did not load:\n{0}")]
    Bundle(Diagnostics),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bundle has no route for the measured request.
    #[error("no route for {0}")]
    NoRoute(String),
    /// The scenario is not what it claims (wrong policy count, unexpected decision).
    #[error("{0}")]
    Unexpected(String),
}

/// A ready-to-run scenario. Dropping it removes its bundle directory.
#[derive(Debug)]
pub struct Scenario {
    /// The policy language.
    pub engine: EngineKind,
    /// Grants in the index.
    pub grants: usize,
    /// Policies in the bundle.
    pub policies: usize,
    /// Entities of entity data in the bundle (0: none).
    pub entities: usize,
    authorizer: Authorizer,
    caller: Principal,
    claims: serde_json::Map<String, serde_json::Value>,
    _dir: tempfile::TempDir,
}

impl Scenario {
    /// Builds the bundle and the grant population and checks that the measured request is allowed by the
    /// `payments-writer` policy on the caller's payments-writer grant, so that no benchmark times a broken path.
    pub fn build(engine: EngineKind, grants: usize, policies: usize) -> Result<Self, BenchError> {
        Self::build_from(&synth::quickstart_dir(engine), engine, grants, policies)
    }

    /// [`Scenario::build`] with `entities` entities of entity data in the bundle (Cedar entity data or OPA data; see
    /// [`synth::write_entities`]): the caller and the resource are among them, and one of the `policies` reads the
    /// data ([`synth::DATA_POLICY`]). Besides the allow, the check asks for a deny by that policy for a user whose
    /// team is in another organization, so a scenario whose data did not load or is not seen fails to build.
    pub fn build_with_entities(
        engine: EngineKind,
        grants: usize,
        policies: usize,
        entities: usize,
    ) -> Result<Self, BenchError> {
        Self::build_in(
            &synth::quickstart_dir(engine),
            engine,
            grants,
            policies,
            entities,
        )
    }

    /// [`Scenario::build`] with an explicit base bundle directory.
    pub fn build_from(
        base: &Path,
        engine: EngineKind,
        grants: usize,
        policies: usize,
    ) -> Result<Self, BenchError> {
        Self::build_in(base, engine, grants, policies, 0)
    }

    fn build_in(
        base: &Path,
        engine: EngineKind,
        grants: usize,
        policies: usize,
        entities: usize,
    ) -> Result<Self, BenchError> {
        if policies < synth::CORE_POLICIES {
            return Err(BenchError::Unexpected(format!(
                "at least {} policies (the core) are needed, {policies} asked",
                synth::CORE_POLICIES
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("jitgate-bench-")
            .tempdir()
            .map_err(BenchError::TempDir)?;
        synth::write_bundle_with_data(base, dir.path(), engine, policies, entities)?;
        let bundle = Bundle::load(dir.path()).map_err(BenchError::Bundle)?;
        let loaded = bundle.backend().policy_ids().len();
        if loaded != policies {
            return Err(BenchError::Unexpected(format!(
                "the bundle holds {loaded} policies, {policies} asked"
            )));
        }
        let store = Arc::new(MemStore::with_grants(population(grants)));
        let authorizer = Authorizer::new(bundle, store, Clock::frozen(REQUEST_TIME))?;
        if authorizer.grants().len() != grants {
            return Err(BenchError::Unexpected(format!(
                "the index holds {} grants, {grants} asked",
                authorizer.grants().len()
            )));
        }
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "alice".into());
        claims.insert("iss".into(), "https://idp.example.com".into());
        claims.insert("email".into(), "alice@example.com".into());
        claims.insert("groups".into(), serde_json::json!(["engineering"]));
        let scenario = Scenario {
            engine,
            grants,
            policies,
            entities,
            authorizer,
            caller: Principal {
                entity: caller(),
                groups: vec!["engineering".into()],
                group_type: None,
                attrs: Default::default(),
            },
            claims,
            _dir: dir,
        };
        let d = scenario.decide_once()?;
        if d.effect != Effect::Allow
            || d.policies != ["payments-writer"]
            || d.grants_used != ["alice-payments-writer"]
        {
            return Err(BenchError::Unexpected(format!(
                "{}: expected allow by payments-writer, got {d:?}",
                scenario.id()
            )));
        }
        if entities > 0 {
            // `u3` is in team `t3`, directly in organization `o3`: the data policy must deny it.
            let d = scenario.decide_as(EntityRef::new("User", "u3"))?;
            if d.effect != Effect::Deny || d.policies != [synth::DATA_POLICY] {
                return Err(BenchError::Unexpected(format!(
                    "{}: expected User::\"u3\" denied by {}, got {d:?}",
                    scenario.id(),
                    synth::DATA_POLICY
                )));
            }
        }
        Ok(scenario)
    }

    /// The benchmark id, e.g. `cedar/grants=1000/policies=100` (with `/entities=10000` when there is entity data).
    pub fn id(&self) -> String {
        let mut id = format!(
            "{}/grants={}/policies={}",
            self.engine.as_str(),
            self.grants,
            self.policies
        );
        if self.entities > 0 {
            id.push_str(&format!("/entities={}", self.entities));
        }
        id
    }

    /// The measured work: take the bundle snapshot, match the route, build the request, decide (grant lookup,
    /// materialization of the active in-scope grants, policy evaluation).
    pub fn decide_once(&self) -> Result<Decision, BenchError> {
        self.decide(&self.caller)
    }

    /// The measured request made by another user (same claims, no groups), for the set-up checks.
    fn decide_as(&self, who: EntityRef) -> Result<Decision, BenchError> {
        self.decide(&Principal {
            entity: who,
            groups: Vec::new(),
            group_type: None,
            attrs: Default::default(),
        })
    }

    fn decide(&self, principal: &Principal) -> Result<Decision, BenchError> {
        let bundle = self.authorizer.bundle();
        let (method, path) = ("POST", "/payments");
        let m = bundle
            .routes
            .find(method, Some(HOST), path)
            .ok_or_else(|| BenchError::NoRoute(format!("{method} {path}")))?;
        let mut context = Context::at(REQUEST_TIME);
        context.source_ip = Some("10.1.2.3".into());
        context.method = Some(method.into());
        context.path = Some(path.into());
        context.host = Some(HOST.into());
        context.claims = self.claims.clone();
        let request = AuthzRequest {
            principal: principal.clone(),
            action: m.route.action.clone(),
            resource: m.resource,
            context,
            digest: None,
        };
        Ok(self.authorizer.decide(&bundle, &request))
    }
}

fn caller() -> EntityRef {
    EntityRef::new("User", "alice")
}

fn grant(id: String, principal: EntityRef, role: &str, scope: EntityRef) -> Grant {
    Grant {
        id,
        principal,
        role: role.into(),
        scope,
        starts_at: REQUEST_TIME - 600,
        expires_at: REQUEST_TIME + 3_000,
        max_uses: None,
        uses: 0,
        status: GrantStatus::Active,
        approvers: vec!["bob".into()],
        reason: "benchmark".into(),
        break_glass: false,
        request_digest: None,
        request_id: None,
    }
}

/// `n` active grants: the caller's 3 (payments-writer and a generated role in scope, db-admin out of scope), the
/// rest spread 3 to a principal over roles and scopes.
pub fn population(n: usize) -> Vec<Grant> {
    let payments = EntityRef::new("Service", "payments");
    let billing = EntityRef::new("Service", "billing");
    let own = [
        grant(
            "alice-payments-writer".into(),
            caller(),
            "payments-writer",
            payments.clone(),
        ),
        grant("alice-r1".into(), caller(), "r1", payments.clone()),
        grant(
            "alice-db-admin".into(),
            caller(),
            "db-admin",
            billing.clone(),
        ),
    ];
    let roles = [
        "payments-writer",
        "refund-once",
        "db-admin",
        "break-glass",
        "r1",
        "r2",
    ];
    let others = (0..n.saturating_sub(own.len())).map(|i| {
        let scope = match i % 3 {
            0 => payments.clone(),
            1 => billing.clone(),
            _ => EntityRef::new("Payment", format!("p-{i}")),
        };
        let role = roles.get(i % roles.len()).copied().unwrap_or("r1");
        grant(
            format!("g-{i}"),
            EntityRef::new("User", format!("user-{}", i / 3)),
            role,
            scope,
        )
    });
    own.into_iter().take(n).chain(others).collect()
}
