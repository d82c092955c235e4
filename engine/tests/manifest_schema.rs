//! The bundle manifest JSON Schema (`schemas/bundle-manifest.schema.json`) against the loader: every shipped
//! `bundle.toml` and the annotated example validate and load, bad manifests are refused by both, and the schema names
//! exactly the keys the serde structs of `manifest.rs` accept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use jitgate_engine::manifest::{
    CedarSettings, CedarValidation, Manifest, RegoSettings, RoleSettings, RouteSpec, RoutesFile,
};
use jitgate_engine::{Bundle, EngineKind};
use serde_json::Value;

const SCHEMA_ID: &str = "https://example.invalid/jitgate/schemas/bundle-manifest.schema.json";
/// The line of the example after which (past one paragraph of prose) a commented-out routes file follows.
const ROUTES_MARKER: &str = "# ----- routes.toml -----";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn schema() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo("schemas/bundle-manifest.schema.json")).unwrap(),
    )
    .unwrap()
}

fn manifest_validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).unwrap()
}

/// The routes-file schema used the way a user would: by reference into the manifest schema.
fn routes_file_validator() -> jsonschema::Validator {
    let root = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("{SCHEMA_ID}#/$defs/routesFile"),
    });
    jsonschema::options()
        .with_resource(
            SCHEMA_ID,
            jsonschema::Resource::from_contents(schema()).unwrap(),
        )
        .build(&root)
        .unwrap()
}

fn errors(validator: &jsonschema::Validator, toml_text: &str) -> Vec<String> {
    let instance: Value = toml::from_str(toml_text).unwrap();
    validator
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

fn example_text() -> String {
    std::fs::read_to_string(repo("schemas/examples/bundle.example.toml")).unwrap()
}

/// The routes file shown (commented out) at the end of the example.
fn example_routes_file(example: &str) -> String {
    let mut lines = example.lines().skip_while(|l| *l != ROUTES_MARKER);
    assert!(
        lines.next().is_some(),
        "the example has no `{ROUTES_MARKER}` section"
    );
    let body: Vec<&str> = lines
        .skip_while(|l| *l != "#")
        .skip(1)
        .map(|l| {
            l.strip_prefix("# ")
                .or_else(|| l.strip_prefix('#'))
                .unwrap_or(l)
        })
        .collect();
    assert!(!body.is_empty(), "the example's routes file is empty");
    body.join("\n") + "\n"
}

/// A bundle directory with the quickstart Cedar schema, policies (`policies/`) and tests (`tests/`), the quickstart
/// Rego policies (`rego-policies/`), and `manifest` as its `bundle.toml`.
fn cedar_bundle(manifest: &str, routes_file: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let quickstart = repo("policies/quickstart-cedar");
    std::fs::copy(
        quickstart.join("schema.cedarschema"),
        dir.path().join("schema.cedarschema"),
    )
    .unwrap();
    copy_dir(&quickstart.join("policies"), &dir.path().join("policies"));
    copy_dir(&quickstart.join("tests"), &dir.path().join("tests"));
    copy_dir(
        &repo("policies/quickstart-rego/policies"),
        &dir.path().join("rego-policies"),
    );
    std::fs::write(dir.path().join("bundle.toml"), manifest).unwrap();
    if let Some(routes) = routes_file {
        std::fs::write(dir.path().join("routes.toml"), routes).unwrap();
        // What the example's routes file (and the routes-file cases below) need from the schema.
        let mut schema = std::fs::read_to_string(dir.path().join("schema.cedarschema")).unwrap();
        schema.push_str(
            "\nentity Table in [Database, Service];\n\
             action touchTable, f in [dataPlane]\n  \
             appliesTo { principal: [User, Workload], resource: [Table, Service], context: RequestContext };\n",
        );
        std::fs::write(dir.path().join("schema.cedarschema"), schema).unwrap();
    }
    dir
}

#[test]
fn shipped_manifests_and_the_example_validate_and_load() {
    let validator = manifest_validator();
    let mut shipped = Vec::new();
    for entry in std::fs::read_dir(repo("policies")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("bundle.toml").is_file() {
            shipped.push(dir);
        }
    }
    shipped.sort();
    assert!(shipped.len() >= 2, "{shipped:?}");
    for dir in &shipped {
        let text = std::fs::read_to_string(dir.join("bundle.toml")).unwrap();
        assert_eq!(
            errors(&validator, &text),
            Vec::<String>::new(),
            "{}",
            dir.display()
        );
        Bundle::load(dir).unwrap_or_else(|d| panic!("{}: {d}", dir.display()));
    }

    // The example: valid for the schema, a `Manifest` for serde, and a bundle that loads next to real files.
    let example = example_text();
    assert_eq!(errors(&validator, &example), Vec::<String>::new());
    let manifest: Manifest = toml::from_str(&example).unwrap();
    assert_eq!(manifest.engine, EngineKind::Cedar);
    let routes = example_routes_file(&example);
    assert_eq!(
        errors(&routes_file_validator(), &routes),
        Vec::<String>::new(),
        "the example's routes file:\n{routes}"
    );
    let file: RoutesFile = toml::from_str(&routes).unwrap();
    assert_eq!(file.routes.len(), 1);
    let dir = cedar_bundle(&example, Some(&routes));
    let bundle = Bundle::load(dir.path()).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(bundle.routes.len(), manifest.routes.len() + 1);
    assert_eq!(bundle.roles["db-admin"].max_duration, 1800);
    assert_eq!(bundle.roles["db-admin"].max_uses, Some(10));
    assert!(bundle.roles["break-glass"].break_glass);
    let deleted = bundle
        .routes
        .find("DELETE", Some("Admin.Example.com:8443"), "/databases/prod")
        .unwrap();
    assert_eq!(deleted.route.action, "deleteDatabase");
    assert!(
        bundle
            .routes
            .find("DELETE", Some("other.example.com"), "/databases/prod")
            .is_none()
    );
    let table = bundle
        .routes
        .find("PATCH", None, "/databases/prod/tables/a/b")
        .unwrap();
    assert_eq!(table.resource.entity.to_string(), r#"Table::"prod/a/b""#);
    assert_eq!(table.resource.parents.len(), 2);
}

#[test]
fn bad_manifests_are_refused_by_both_the_loader_and_the_schema() {
    let validator = manifest_validator();
    let head = "name = \"bad\"\nengine = \"cedar\"\nschema = \"schema.cedarschema\"\npolicies = [\"policies\"]\n";
    let route = |extra: &str| {
        format!(
            "{head}[[routes]]\nmethod = \"GET\"\npath = \"/a/{{id}}\"\nservice = \"s\"\naction = \"listPayments\"\n{extra}"
        )
    };
    let with_route = |key: &str, value: &str| {
        format!(
            "{head}[[routes]]\n{}",
            [
                ("method", "\"GET\""),
                ("path", "\"/a/{id}\""),
                ("service", "\"s\""),
                ("action", "\"listPayments\""),
            ]
            .iter()
            .map(|(k, v)| format!("{k} = {}\n", if *k == key { value } else { v }))
            .collect::<String>()
        )
    };
    let role = |body: &str| format!("{head}[roles.r]\n{body}");
    // (manifest, a piece of the loader's message)
    let cases: Vec<(String, &str)> = vec![
        // a route host with a port would never match (the request's port is ignored)
        (
            route("host = \"api.example.com:8443\"\n"),
            "is not a host name",
        ),
        (
            route("host = \"https://api.example.com\"\n"),
            "is not a host name",
        ),
        // unknown keys, anywhere
        (format!("{head}nme = \"x\"\n"), "unknown field `nme`"),
        (route("methd = \"GET\"\n"), "unknown field `methd`"),
        (
            role("max_duraton = \"1h\"\n"),
            "unknown field `max_duraton`",
        ),
        (
            format!("{head}[rego]\npackage = \"a\"\npkg = \"b\"\n"),
            "unknown field `pkg`",
        ),
        // enums, required fields, types
        (
            head.replace("\"cedar\"", "\"opa\""),
            "unknown variant `opa`",
        ),
        (head.replace("name = \"bad\"\n", ""), "missing field `name`"),
        (
            format!("{head}[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"s\"\n"),
            "missing field `action`",
        ),
        (
            head.replace("[\"policies\"]", "\"policies\""),
            "invalid type",
        ),
        (route("public = \"yes\"\n"), "invalid type"),
        (role("approvals_required = -1\n"), "invalid value"),
        // engine-specific requirements
        (
            head.replace("schema = \"schema.cedarschema\"\n", ""),
            "a Cedar bundle needs a schema file",
        ),
        (
            head.replace("\"cedar\"", "\"rego\""),
            "a Rego bundle needs `[rego] package",
        ),
        (
            head.replace("\"cedar\"", "\"rego\"")
                .replace("[\"policies\"]", "[\"rego-policies\"]")
                + "[rego]\npackage = \"jitgate-authz\"\n",
            "not a dotted Rego package name",
        ),
        (
            head.replace("[\"policies\"]", "[]"),
            "no `.cedar` files found",
        ),
        // route rules
        (with_route("method", "\"GE T\""), "field `method`"),
        (with_route("path", "\"a/{id}\""), "must start with `/`"),
        (
            with_route("path", "\"/a/{rest*}/b\""),
            "must be the last segment",
        ),
        (
            with_route("path", "\"/a/x{id}\""),
            "mixes text and a parameter",
        ),
        (with_route("path", "\"/a/{my-id}\""), "bad parameter name"),
        (with_route("service", "\"\""), "field `service`"),
        (with_route("action", "'say\"hi'"), "field `action`"),
        (route("resource = 'Payment:\"{id}\"'\n"), "field `resource`"),
        (route("resource = 'Payment::\"{id\"'\n"), "field `resource`"),
        (route("parents = ['Bucket::main']\n"), "field `parents`"),
        // role rules
        (role("max_duration = \"soon\"\n"), "max_duration"),
        (
            role("max_duration = \"0s\"\n"),
            "max_duration: must be positive",
        ),
        (role("pending_ttl = \"1 fortnight\"\n"), "pending_ttl"),
        (
            role("break_glass = true\n"),
            "a break-glass role must require a reason",
        ),
        (role("max_uses = 0\n"), "max_uses: must be at least 1"),
    ];
    for (text, expected) in &cases {
        assert!(
            !errors(&validator, text).is_empty(),
            "the schema accepted:\n{text}"
        );
        let dir = cedar_bundle(text, None);
        let err = Bundle::load(dir.path())
            .err()
            .unwrap_or_else(|| panic!("the loader accepted:\n{text}"))
            .to_string();
        assert!(err.contains(expected), "{text}\nthe loader said: {err}");
    }
    // Values the schema cannot judge (it only knows a duration starts with a digit): the loader names the key.
    for (text, expected) in [
        (
            role("pending_ttl = \"0s\"\n"),
            "pending_ttl: must be at least 1s",
        ),
        (
            role("max_duration = \"10000000000000000000s\"\n"),
            "max_duration: duration `10000000000000000000s` is too long",
        ),
    ] {
        let err = Bundle::load(cedar_bundle(&text, None).path())
            .err()
            .unwrap_or_else(|| panic!("the loader accepted:\n{text}"))
            .to_string();
        assert!(err.contains(expected), "{text}\nthe loader said: {err}");
    }
    // Sanity: the base alone, with the route and with an empty role, is fine for both.
    for good in [head.to_string(), route(""), role("")] {
        assert_eq!(errors(&validator, &good), Vec::<String>::new(), "{good}");
        Bundle::load(cedar_bundle(&good, None).path()).unwrap_or_else(|d| panic!("{good}\n{d}"));
    }

    // A routes file: unknown keys and bad routes refused by both (it loads through a manifest naming it).
    let routes_validator = routes_file_validator();
    let with_file = format!("{head}routes_file = \"routes.toml\"\n");
    let good_routes =
        "[[routes]]\nmethod = \"*\"\npath = \"/f/{key*}\"\nservice = \"s\"\naction = \"f\"\n";
    for (routes, expected) in [
        (
            format!("{good_routes}hots = \"h\"\n"),
            "unknown field `hots`",
        ),
        (
            format!("name = \"x\"\n{good_routes}"),
            "unknown field `name`",
        ),
        (good_routes.replace("{key*}", "{key}*"), "mixes text"),
    ] {
        assert!(
            !errors(&routes_validator, &routes).is_empty(),
            "the schema accepted the routes file:\n{routes}"
        );
        let dir = cedar_bundle(&with_file, Some(&routes));
        let err = Bundle::load(dir.path())
            .err()
            .unwrap_or_else(|| panic!("the loader accepted the routes file:\n{routes}"))
            .to_string();
        assert!(err.contains(expected), "{routes}\nthe loader said: {err}");
    }
    assert_eq!(errors(&routes_validator, good_routes), Vec::<String>::new());
    Bundle::load(cedar_bundle(&with_file, Some(good_routes)).path())
        .unwrap_or_else(|d| panic!("{d}"));
}

/// A route whose action or resource the Cedar schema does not know would deny every request it meets: the loader
/// refuses it, naming the route's file and line and what to declare. The JSON Schema cannot know a Cedar schema.
#[test]
fn routes_that_do_not_fit_the_cedar_schema_are_refused_with_their_line() {
    let head = "name = \"r\"\nengine = \"cedar\"\nschema = \"schema.cedarschema\"\npolicies = [\"policies\"]\n";
    let good = "[[routes]]\nmethod = \"GET\"\npath = \"/p/{id}\"\nservice = \"payments\"\naction = \"readPayment\"\n\
                resource = 'Payment::\"{id}\"'\n";
    Bundle::load(cedar_bundle(&format!("{head}{good}"), None).path())
        .unwrap_or_else(|d| panic!("{d}"));
    let validator = manifest_validator();
    for (route, expected) in [
        (
            good.replace("readPayment", "raedPayment"),
            "route `GET /p/{id}`: action `raedPayment` is not declared in the schema",
        ),
        (
            good.replace("readPayment", "listPayments"),
            "action `listPayments` does not apply to resource type `Payment` in the schema (it applies to: Service)",
        ),
        (
            good.replace("readPayment", "dataPlane"),
            "action `dataPlane` is an action group, and no request can be for a group",
        ),
        (
            good.replace("Payment::", "Paymnet::"),
            "resource type `Paymnet` is not declared in the schema",
        ),
        (
            format!("{good}parents = ['Database::\"d\"']\n"),
            "the schema does not let `Payment` be in `Database`",
        ),
        (
            format!("{good}parents = ['Ledger::\"l\"']\n"),
            "parent type `Ledger` is not declared in the schema",
        ),
    ] {
        // Two good routes first, so the line number is the bad route's own.
        let text = format!(
            "{head}[[routes]]\nmethod = \"GET\"\npath = \"/payments\"\nservice = \"payments\"\naction = \"listPayments\"\n\n{route}"
        );
        assert_eq!(errors(&validator, &text), Vec::<String>::new(), "{text}");
        let dir = cedar_bundle(&text, None);
        let err = Bundle::load(dir.path())
            .err()
            .unwrap_or_else(|| panic!("the loader accepted:\n{text}"))
            .to_string();
        assert!(err.contains(expected), "{text}\nthe loader said: {err}");
        assert!(err.contains("bundle.toml:11:1: route"), "{err}");
    }
}

/// What the route check must still accept: an action declared in a namespace (found by its id, as requests find
/// it), and a resource type that is in no `Service` when the route writes no `parents` (the default service parent
/// is jitgate's own, for grant scopes). A parent the route does write must fit the schema.
#[test]
fn routes_with_namespaced_actions_and_standalone_resources_load() {
    let head = "name = \"r\"\nengine = \"cedar\"\nschema = \"schema.cedarschema\"\npolicies = [\"policies\"]\n";
    let routes = "[[routes]]\nmethod = \"GET\"\npath = \"/receipts/{id}\"\nservice = \"payments\"\naction = \"readReceipt\"\n\
                  resource = 'Receipt::\"{id}\"'\n\n\
                  [[routes]]\nmethod = \"GET\"\npath = \"/ledgers/{id}\"\nservice = \"payments\"\naction = \"readLedger\"\n\
                  resource = 'Acme::Ledger::\"{id}\"'\n";
    let extend = |dir: &Path| {
        let file = dir.join("schema.cedarschema");
        let mut schema = std::fs::read_to_string(&file).unwrap();
        schema.push_str(
            "\nentity Receipt;\n\
             action readReceipt appliesTo { principal: [User, Workload], resource: [Receipt], context: RequestContext };\n\
             namespace Acme {\n  entity Ledger in [Service];\n  \
             action readLedger appliesTo { principal: [User, Workload], resource: [Ledger], context: RequestContext };\n}\n",
        );
        std::fs::write(file, schema).unwrap();
    };
    let dir = cedar_bundle(&format!("{head}{routes}"), None);
    extend(dir.path());
    let bundle = Bundle::load(dir.path()).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(bundle.routes.len(), 2);

    let written = routes.replacen(
        "resource = 'Receipt::\"{id}\"'\n",
        "resource = 'Receipt::\"{id}\"'\nparents = ['Service::\"payments\"']\n",
        1,
    );
    let dir = cedar_bundle(&format!("{head}{written}"), None);
    extend(dir.path());
    let err = Bundle::load(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains("bundle.toml:5:1: route `GET /receipts/{id}`: the schema does not let `Receipt` be in `Service`"),
        "{err}"
    );
}

/// Role settings and file lists that parse but do not make sense are reported at their own line; a required
/// setting that is left out, at the role that lacks it.
#[test]
fn manifest_value_errors_name_their_line() {
    let head = "name = \"r\"\nengine = \"cedar\"\nschema = \"schema.cedarschema\"\npolicies = [\"policies\"]\n";
    for (text, line, expected) in [
        (
            format!("{head}[roles.r]\nmax_duration = \"1h\"\npending_ttl = \"0s\"\n"),
            7,
            "roles.r: pending_ttl: must be at least 1s",
        ),
        (
            format!("{head}[roles.r]\nmax_uses = 0\n"),
            6,
            "roles.r: max_uses: must be at least 1",
        ),
        // `reason_required` is not written: the role's own line.
        (
            format!("{head}\n[roles.r]\nbreak_glass = true\n"),
            6,
            "roles.r: reason_required: a break-glass role must require a reason",
        ),
        (
            head.replace("[\"policies\"]", "[\"policies\", \"nope\"]"),
            4,
            "policies: `nope` does not exist in the bundle",
        ),
    ] {
        let err = Bundle::load(cedar_bundle(&text, None).path())
            .err()
            .unwrap_or_else(|| panic!("the loader accepted:\n{text}"))
            .to_string();
        assert!(
            err.contains(&format!("bundle.toml:{line}:")),
            "{text}\nexpected line {line}; the loader said: {err}"
        );
        assert!(err.contains(expected), "{text}\nthe loader said: {err}");
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// Every field the serde structs accept has a schema property and the other way round; every one is shown in the
/// example. The structs are built with every field set, so a new field must be added here (it will not compile
/// otherwise) and then to the schema (or this fails).
#[test]
fn the_schema_names_exactly_the_fields_of_the_manifest_structs() {
    let schema = schema();
    let defs = &schema["$defs"];
    let route = RouteSpec {
        method: "GET".into(),
        path: "/a/{id}".into(),
        host: Some("h".into()),
        service: "s".into(),
        action: "a".into(),
        resource: Some("T::\"{id}\"".into()),
        parents: Some(vec!["Service::\"s\"".into()]),
        public: true,
    };
    let role = RoleSettings {
        max_duration: "1h".into(),
        reason_required: true,
        approvals_required: 1,
        pending_ttl: "1h".into(),
        max_start_delay: Some("1h".into()),
        break_glass: true,
        max_uses: Some(1),
        description: Some("d".into()),
    };
    let rego = RegoSettings {
        package: "p".into(),
    };
    let manifest = Manifest {
        name: "n".into(),
        engine: EngineKind::Rego,
        schema: Some("s".into()),
        policies: vec!["p".into()],
        entities: vec!["e.json".into()],
        links: vec!["l.json".into()],
        tests: vec!["t".into()],
        cedar: Some(CedarSettings {
            validation: CedarValidation::Warn,
        }),
        rego: Some(rego.clone()),
        routes_file: Some("r.toml".into()),
        routes: vec![toml::Spanned::new(0..0, route.clone())],
        roles: BTreeMap::from([("r".to_string(), role.clone())]),
    };
    let routes_file = RoutesFile {
        routes: vec![toml::Spanned::new(0..0, route.clone())],
    };
    let pairs = [
        (
            "Manifest",
            serde_json::to_value(&manifest).unwrap(),
            &schema,
        ),
        (
            "RouteSpec",
            serde_json::to_value(&route).unwrap(),
            &defs["route"],
        ),
        (
            "RoleSettings",
            serde_json::to_value(&role).unwrap(),
            &defs["role"],
        ),
        (
            "RegoSettings",
            serde_json::to_value(&rego).unwrap(),
            &defs["rego"],
        ),
        (
            "CedarSettings",
            serde_json::to_value(CedarSettings {
                validation: CedarValidation::Warn,
            })
            .unwrap(),
            &defs["cedar"],
        ),
        (
            "RoutesFile",
            serde_json::to_value(&routes_file).unwrap(),
            &defs["routesFile"],
        ),
    ];
    let example = example_text();
    for (name, value, def) in &pairs {
        let fields = keys(value);
        assert_eq!(
            fields,
            keys(&def["properties"]),
            "{name}: the struct's fields vs the schema's properties"
        );
        // The fully populated struct, as TOML, is a valid manifest (or part of one) for the loader.
        let text = toml::to_string(value).unwrap();
        let parsed = match *name {
            "Manifest" => toml::from_str::<Manifest>(&text).map(|_| ()),
            "RouteSpec" => toml::from_str::<RouteSpec>(&text).map(|_| ()),
            "RoleSettings" => toml::from_str::<RoleSettings>(&text).map(|_| ()),
            "RegoSettings" => toml::from_str::<RegoSettings>(&text).map(|_| ()),
            "CedarSettings" => toml::from_str::<CedarSettings>(&text).map(|_| ()),
            _ => toml::from_str::<RoutesFile>(&text).map(|_| ()),
        };
        parsed.unwrap_or_else(|e| panic!("{name} does not read back:\n{text}\n{e}"));
        if *name == "RoutesFile" {
            continue;
        }
        for field in &fields {
            let shown = example.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{field} ="))
                    || l.starts_with(&format!("[{field}]"))
                    || l.starts_with(&format!("[[{field}]]"))
                    || l.starts_with(&format!("[{field}."))
            });
            assert!(shown, "{name}.{field} is not shown in the example");
        }
    }
    // Every field set, the fully populated manifest is valid for the schema too.
    let instance: Value = toml::from_str(&toml::to_string(&manifest).unwrap()).unwrap();
    let errs: Vec<String> = manifest_validator()
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert_eq!(errs, Vec::<String>::new());
}

/// The links file format: the example and the shipped links validate against `schemas/links.schema.json`, and a
/// link with a slot no template has, or without an id, does not.
#[test]
fn links_files_validate_against_their_schema() {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("schemas/links.schema.json")).unwrap())
            .unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    for file in [
        "schemas/examples/links.json",
        "policies/docs-cedar/links.json",
        "policies/expenses-cedar/links.json",
        "policies/clinic-cedar/links.json",
    ] {
        let instance: Value =
            serde_json::from_str(&std::fs::read_to_string(repo(file)).unwrap()).unwrap();
        let errs: Vec<String> = v.iter_errors(&instance).map(|e| e.to_string()).collect();
        assert!(errs.is_empty(), "{file}: {errs:?}");
    }
    let bad = serde_json::json!([
        { "id": "x", "template": "t", "values": { "?other": { "type": "User", "id": "a" } } },
        { "template": "t", "values": {} }
    ]);
    assert!(!v.is_valid(&bad));
}

/// The entity data format (bundle entity files and the body of `PUT /v1/entities`): the example and the shipped
/// entity files validate against `schemas/entities.schema.json`; an entity without a uid, or with a parent that is
/// no uid, does not.
#[test]
fn entity_files_validate_against_their_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("schemas/entities.schema.json")).unwrap(),
    )
    .unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    for file in [
        "schemas/examples/entities.json",
        "policies/docs-cedar/entities.json",
        "policies/expenses-cedar/entities.json",
    ] {
        let instance: Value =
            serde_json::from_str(&std::fs::read_to_string(repo(file)).unwrap()).unwrap();
        let errs: Vec<String> = v.iter_errors(&instance).map(|e| e.to_string()).collect();
        assert!(errs.is_empty(), "{file}: {errs:?}");
    }
    assert!(!v.is_valid(&serde_json::json!([{ "attrs": {} }])));
    assert!(!v.is_valid(&serde_json::json!([
        { "uid": { "type": "Doc", "id": "a" }, "parents": ["Folder::\"x\""] }
    ])));
}
