//! The route table: method + host + path template -> action and resource (with its parents).
//! Built and validated when a bundle loads; matching is allocation-light and picks the most specific route.

use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

use crate::diag::{Diagnostic, Diagnostics};
use crate::entity::EntityRef;
use crate::manifest::RouteSpec;
use crate::request::Resource;

/// One path segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Param(String),
    Rest(String),
}

impl Seg {
    /// Lower ranks are more specific.
    fn rank(&self) -> u8 {
        match self {
            Seg::Lit(_) => 0,
            Seg::Param(_) => 1,
            Seg::Rest(_) => 2,
        }
    }
}

/// Text with `{param}` placeholders, pre-split into pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Param(String),
}

/// An entity template such as `Database::"{db}"`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EntityTemplate {
    ty: String,
    id: Vec<Piece>,
}

impl EntityTemplate {
    fn parse(text: &str, params: &[&str]) -> Result<Self, String> {
        let e: EntityRef = text
            .parse()
            .map_err(|e: crate::entity::EntityRefError| e.to_string())?;
        let mut pieces = Vec::new();
        let mut rest = e.id.as_str();
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .map(|c| c + open)
                .ok_or_else(|| format!("unclosed `{{` in `{text}`"))?;
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let name = rest[open + 1..close].trim_end_matches('*');
            if !params.contains(&name) {
                return Err(format!(
                    "`{{{name}}}` in `{text}` is not a parameter of the route's path"
                ));
            }
            pieces.push(Piece::Param(name.to_string()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(EntityTemplate {
            ty: e.ty,
            id: pieces,
        })
    }

    fn render(&self, names: &[&str], values: &[String]) -> EntityRef {
        let mut id = String::new();
        for p in &self.id {
            match p {
                Piece::Text(t) => id.push_str(t),
                Piece::Param(n) => {
                    if let Some(v) = names
                        .iter()
                        .position(|x| x == n)
                        .and_then(|i| values.get(i))
                    {
                        id.push_str(v);
                    }
                }
            }
        }
        EntityRef {
            ty: self.ty.clone(),
            id,
        }
    }
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Upper-case method, or `None` for any.
    pub method: Option<String>,
    /// Lower-case host, or `None` for any.
    pub host: Option<String>,
    /// The path template as written.
    pub path: String,
    /// The upstream service name.
    pub service: String,
    /// The action id.
    pub action: String,
    /// Whether no credential is needed.
    pub public: bool,
    /// The file and line the route was written at, for diagnostics about it after loading.
    pub origin: (PathBuf, usize),
    segments: Vec<Seg>,
    resource: EntityTemplate,
    parents: Vec<EntityTemplate>,
    /// Whether `parents` was written in the route (else it is the default).
    parents_written: bool,
}

/// The result of matching a request against the table.
#[derive(Debug, Clone)]
pub struct RouteMatch<'a> {
    /// The route that matched.
    pub route: &'a Route,
    /// The resource, rendered from the route's templates and the path's parameters.
    pub resource: Resource,
    /// Path parameters by name (percent-decoded).
    pub params: Vec<(String, String)>,
}

/// Route specs as read from one file, for [`RouteTable::build_from`].
#[derive(Debug, Clone, Copy)]
pub struct RouteSource<'a> {
    /// The file the routes were read from.
    pub file: &'a Path,
    /// Its text (for line numbers).
    pub source: &'a str,
    /// The routes, with their spans in `source`.
    pub specs: &'a [toml::Spanned<RouteSpec>],
}

/// All routes of a bundle, ordered most specific first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl Route {
    /// The entity type of the resource this route decides on, e.g. `Payment` or `Service`.
    pub fn resource_type(&self) -> &str {
        &self.resource.ty
    }

    /// The entity types of the parents the route writes in `parents`, in that order; empty when the route leaves
    /// them out (the default `Service::"<service>"` parent is jitgate's own, for grant scopes, not the schema's).
    pub fn parent_types(&self) -> impl Iterator<Item = &str> {
        self.parents
            .iter()
            .filter(|_| self.parents_written)
            .map(|p| p.ty.as_str())
    }
}

impl RouteTable {
    /// Validates `specs` (from `file`, whose text is `source`, for line numbers) into a table.
    /// Every bad route is reported, not just the first.
    pub fn build(
        file: &Path,
        source: &str,
        specs: &[toml::Spanned<RouteSpec>],
    ) -> Result<Self, Diagnostics> {
        Self::build_from(&[RouteSource {
            file,
            source,
            specs,
        }])
    }

    /// Validates the routes of several files (the manifest and its `routes_file`) into one table, so that overlaps
    /// across files are caught. Every error names the file and line of the route it is about.
    pub fn build_from(parts: &[RouteSource<'_>]) -> Result<Self, Diagnostics> {
        let mut routes = Vec::new();
        // For each built route: the file it came from and its offset there.
        let mut origins = Vec::new();
        let mut errors = Vec::new();
        for part in parts {
            for spec in part.specs {
                let span = spec.span();
                match Self::build_one(spec.get_ref()) {
                    Ok(mut r) => {
                        let line = crate::diag::line_col(part.source, span.start).0;
                        r.origin = (part.file.to_path_buf(), line);
                        routes.push(r);
                        origins.push((part, span.start));
                    }
                    Err(msg) => errors.push(Diagnostic::at_offset(
                        part.file,
                        part.source,
                        span.start,
                        format!(
                            "route `{} {}`: {msg}",
                            spec.get_ref().method,
                            spec.get_ref().path
                        ),
                    )),
                }
            }
        }
        // Two routes with the same method, host and template shape would make matching ambiguous.
        for (i, a) in routes.iter().enumerate() {
            for (j, b) in routes.iter().enumerate().skip(i + 1) {
                if a.method == b.method && a.host == b.host && same_shape(&a.segments, &b.segments)
                {
                    let (part, at) = origins[j];
                    let (a_part, a_at) = origins[i];
                    let a_line = crate::diag::line_col(a_part.source, a_at).0;
                    errors.push(Diagnostic::at_offset(
                        part.file,
                        part.source,
                        at,
                        format!(
                            "route `{} {}` overlaps `{} {}` ({}:{a_line})",
                            b.method.as_deref().unwrap_or("*"),
                            b.path,
                            a.method.as_deref().unwrap_or("*"),
                            a.path,
                            a_part.file.display()
                        ),
                    ));
                }
            }
        }
        Diagnostics(errors).into_result()?;
        routes.sort_by_key(specificity);
        Ok(RouteTable { routes })
    }

    fn build_one(spec: &RouteSpec) -> Result<Route, String> {
        let method = match spec.method.trim() {
            "*" => None,
            m if !m.is_empty() && m.chars().all(|c| c.is_ascii_alphabetic()) => {
                Some(m.to_ascii_uppercase())
            }
            m => {
                return Err(format!(
                    "field `method`: `{m}` is not an HTTP method or `*`"
                ));
            }
        };
        if !spec.path.starts_with('/') {
            return Err("field `path`: must start with `/`".into());
        }
        if spec.action.is_empty() || spec.action.contains('"') {
            return Err("field `action`: must be a non-empty id without quotes".into());
        }
        if spec.service.is_empty() {
            return Err("field `service`: must not be empty".into());
        }
        let raw: Vec<&str> = spec.path[1..].split('/').collect();
        let mut segments = Vec::with_capacity(raw.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let seg = if let Some(inner) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let (name, rest) = match inner.strip_suffix('*') {
                    Some(n) => (n, true),
                    None => (inner, false),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("field `path`: bad parameter name `{{{inner}}}`"));
                }
                if names.contains(&name) {
                    return Err(format!("field `path`: parameter `{name}` appears twice"));
                }
                names.push(name);
                if rest {
                    if i + 1 != raw.len() {
                        return Err(format!(
                            "field `path`: `{{{inner}}}` must be the last segment"
                        ));
                    }
                    Seg::Rest(name.to_string())
                } else {
                    Seg::Param(name.to_string())
                }
            } else if s.contains('{') || s.contains('}') {
                return Err(format!(
                    "field `path`: segment `{s}` mixes text and a parameter"
                ));
            } else {
                // Stored decoded and compared decoded: `/users/%40all` is the literal `/users/@all` to the upstream,
                // so it must be to the route table too (else it falls to `/users/{id}`, another action).
                let Ok(decoded) = percent_decode_str(s).decode_utf8() else {
                    return Err(format!(
                        "field `path`: segment `{s}` is not UTF-8 once percent-decoded"
                    ));
                };
                if decoded == "." || decoded == ".." || decoded.contains(['/', '\\', '\0']) {
                    return Err(format!(
                        "field `path`: segment `{s}` can never match: request paths are normalized first (dot \
                         segments resolved; encoded `/`, `\\` and NUL refused)"
                    ));
                }
                Seg::Lit(decoded.into_owned())
            };
            segments.push(seg);
        }
        if let Some(h) = &spec.host {
            let bracketed = h.starts_with('[') && h.ends_with(']');
            if h.is_empty()
                || h.chars().any(|c| c.is_whitespace() || c == '/')
                || (!bracketed && h.contains(':'))
            {
                return Err(format!(
                    "field `host`: `{h}` is not a host name; write it without a scheme, port or path (the \
                     request's port is ignored when matching)"
                ));
            }
        }
        let service_ref = EntityRef::new("Service", spec.service.clone()).to_string();
        let resource =
            EntityTemplate::parse(spec.resource.as_deref().unwrap_or(&service_ref), &names)
                .map_err(|e| format!("field `resource`: {e}"))?;
        let parent_specs = spec.parents.clone().unwrap_or_else(|| {
            if spec.resource.is_some() {
                vec![service_ref.clone()]
            } else {
                Vec::new()
            }
        });
        // A resource is never its own ancestor (a route whose resource is the service itself has no parent).
        let resource_text = spec.resource.as_deref().unwrap_or(&service_ref);
        let parents = parent_specs
            .iter()
            .filter(|p| p.as_str() != resource_text)
            .map(|p| EntityTemplate::parse(p, &names).map_err(|e| format!("field `parents`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Route {
            method,
            host: spec.host.as_ref().map(|h| h.to_ascii_lowercase()),
            path: spec.path.clone(),
            service: spec.service.clone(),
            action: spec.action.clone(),
            public: spec.public,
            origin: (PathBuf::new(), 0),
            segments,
            resource,
            parents,
            parents_written: spec.parents.is_some(),
        })
    }

    /// Finds the most specific route for a request. `path` is the normalized path (no query).
    pub fn find(&self, method: &str, host: Option<&str>, path: &str) -> Option<RouteMatch<'_>> {
        let rel = path.strip_prefix('/')?;
        // Without its port: `example.com:8443` -> `example.com`, `[::1]:8080` -> `[::1]`.
        let host = host.map(|h| match h.find(']') {
            Some(end) if h.starts_with('[') => &h[..=end],
            _ => h.split(':').next().unwrap_or(h),
        });
        'routes: for route in &self.routes {
            // Methods are case-sensitive (RFC 9110): `get` is not `GET`, and the upstream would get `get`.
            if route.method.as_deref().is_some_and(|m| m != method) {
                continue;
            }
            if let Some(h) = &route.host {
                if !host.is_some_and(|x| x.eq_ignore_ascii_case(h)) {
                    continue;
                }
            }
            let mut names: Vec<&str> = Vec::new();
            let mut values: Vec<String> = Vec::new();
            let mut parts = rel.split('/');
            let mut consumed_all = false;
            for seg in &route.segments {
                match seg {
                    Seg::Lit(l) => match parts.next() {
                        Some(p)
                            if p == l
                                || (p.contains('%') && percent_decode_str(p).eq(l.bytes())) => {}
                        _ => continue 'routes,
                    },
                    Seg::Param(n) => match parts.next().filter(|p| !p.is_empty()).map(decode) {
                        Some(Some(v)) => {
                            names.push(n);
                            values.push(v);
                        }
                        _ => continue 'routes,
                    },
                    Seg::Rest(n) => {
                        let rest: Vec<&str> = parts.by_ref().collect();
                        if rest.is_empty() || rest.iter().all(|s| s.is_empty()) {
                            continue 'routes;
                        }
                        let Some(decoded) =
                            rest.iter().map(|s| decode(s)).collect::<Option<Vec<_>>>()
                        else {
                            continue 'routes;
                        };
                        names.push(n);
                        values.push(decoded.join("/"));
                        consumed_all = true;
                    }
                }
            }
            if !consumed_all && parts.next().is_some() {
                continue;
            }
            let resource = Resource {
                entity: route.resource.render(&names, &values),
                parents: route
                    .parents
                    .iter()
                    .map(|p| p.render(&names, &values))
                    .collect(),
                attrs: Default::default(),
            };
            let params = names.iter().map(|n| n.to_string()).zip(values).collect();
            return Some(RouteMatch {
                route,
                resource,
                params,
            });
        }
        None
    }

    /// The routes, most specific first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no route.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// A path segment's value, decoded; `None` when its bytes are not UTF-8 (two different byte strings must never
/// render as the same entity id, as a lossy decoding would make them).
fn decode(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|d| d.into_owned())
}

fn same_shape(a: &[Seg], b: &[Seg]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Seg::Lit(p), Seg::Lit(q)) => p == q,
            (x, y) => x.rank() == y.rank(),
        })
}

/// Sort key: specific hosts first, then literal over parameter over rest, segment by segment, then exact methods.
fn specificity(r: &Route) -> (u8, Vec<u8>, u8) {
    let mut ranks: Vec<u8> = r.segments.iter().map(Seg::rank).collect();
    // A longer template is more specific than its prefix (`/a/b` before `/a/{rest*}` already holds by rank).
    ranks.push(3);
    (
        u8::from(r.host.is_none()),
        ranks,
        u8::from(r.method.is_none()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(toml_src: &str) -> Result<RouteTable, Diagnostics> {
        let f: crate::manifest::RoutesFile = toml::from_str(toml_src).unwrap();
        RouteTable::build(Path::new("routes.toml"), toml_src, &f.routes)
    }

    const SRC: &str = r#"
[[routes]]
method = "GET"
path = "/databases/{db}"
service = "billing"
action = "readDatabase"
resource = 'Database::"{db}"'

[[routes]]
method = "DELETE"
path = "/databases/{db}"
service = "billing"
action = "deleteDatabase"
resource = 'Database::"{db}"'

[[routes]]
method = "GET"
path = "/databases/special"
service = "billing"
action = "readSpecial"

[[routes]]
method = "*"
path = "/files/{key*}"
service = "files"
action = "touchFile"
resource = 'File::"{key}"'
parents = ['Bucket::"main"', 'Service::"files"']
"#;

    /// A literal matches the request segment it decodes to, as the upstream will read it: `/users/%40all` is
    /// `/users/@all`, not `/users/{id}` with id `@all` (another action on another resource).
    #[test]
    fn literals_match_their_percent_encoded_forms() {
        let src = r#"
[[routes]]
method = "DELETE"
path = "/users/@all"
service = "accounts"
action = "deleteAllUsers"

[[routes]]
method = "DELETE"
path = "/users/{id}"
service = "accounts"
action = "deleteUser"
resource = 'User::"{id}"'

[[routes]]
method = "GET"
path = "/odata/%24batch"
service = "accounts"
action = "batch"
"#;
        let t = table(src).unwrap();
        for path in ["/users/@all", "/users/%40all", "/users/%40%61ll"] {
            let m = t.find("DELETE", None, path).unwrap();
            assert_eq!(
                m.route.action, "deleteAllUsers",
                "{path} decided as {}",
                m.resource.entity
            );
        }
        assert_eq!(
            t.find("DELETE", None, "/users/%40bob")
                .unwrap()
                .resource
                .entity
                .id,
            "@bob"
        );
        // A literal written encoded matches the raw form and the encoded one.
        for path in ["/odata/$batch", "/odata/%24batch"] {
            assert_eq!(
                t.find("GET", None, path).unwrap().route.action,
                "batch",
                "{path}"
            );
        }
        // Templates that no normalized path can match are refused.
        for bad in ["/a/%2e%2e/b", "/a/./b", "/a/%2F", "/a/%FF"] {
            let src = format!(
                "[[routes]]\nmethod = \"GET\"\npath = \"{bad}\"\nservice = \"s\"\naction = \"a\"\n"
            );
            assert!(table(&src).is_err(), "{bad} was accepted");
        }
    }

    /// Two different byte strings never render as one entity id: a segment that is not UTF-8 matches no parameter.
    #[test]
    fn parameters_that_are_not_utf8_match_nothing() {
        let t = table(SRC).unwrap();
        assert!(t.find("GET", None, "/databases/%FF").is_none());
        assert!(t.find("PUT", None, "/files/a/%C0%AE").is_none());
        assert_eq!(
            t.find("GET", None, "/databases/%EF%BF%BD")
                .unwrap()
                .resource
                .entity
                .id,
            "\u{FFFD}"
        );
    }

    #[test]
    fn matches_templates_and_renders_resources() {
        let t = table(SRC).unwrap();
        let m = t.find("DELETE", None, "/databases/prod-eu").unwrap();
        assert_eq!(m.route.action, "deleteDatabase");
        assert_eq!(m.resource.entity, EntityRef::new("Database", "prod-eu"));
        assert_eq!(
            m.resource.parents,
            vec![EntityRef::new("Service", "billing")]
        );
        // literal beats parameter
        assert_eq!(
            t.find("GET", None, "/databases/special")
                .unwrap()
                .route
                .action,
            "readSpecial"
        );
        // rest parameter takes the remaining segments
        let f = t.find("PUT", None, "/files/a/b%20c").unwrap();
        assert_eq!(f.resource.entity.id, "a/b c");
        assert_eq!(f.resource.parents.len(), 2);
        // no match: wrong method (methods are case-sensitive), extra segment, missing segment, trailing slash
        assert!(t.find("POST", None, "/databases/x").is_none());
        assert!(t.find("get", None, "/databases/x").is_none());
        assert!(t.find("GET", None, "/databases/x/y").is_none());
        assert!(t.find("GET", None, "/databases").is_none());
        assert!(t.find("GET", None, "/databases/").is_none());
    }

    #[test]
    fn bad_routes_name_line_and_field() {
        let src = "[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"s\"\naction = \"a\"\n\n[[routes]]\nmethod = \"GET\"\npath = \"/b/{x}\"\nservice = \"s\"\naction = \"b\"\nresource = 'T::\"{y}\"'\n";
        let e = table(src).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].line, Some(7));
        assert!(e.0[0].message.contains("field `resource`"), "{}", e);
        let overlap = "[[routes]]\nmethod = \"GET\"\npath = \"/a/{x}\"\nservice = \"s\"\naction = \"a\"\n[[routes]]\nmethod = \"GET\"\npath = \"/a/{y}\"\nservice = \"s\"\naction = \"b\"\n";
        assert!(table(overlap).unwrap_err().to_string().contains("overlaps"));
    }

    fn specs(src: &str) -> Vec<toml::Spanned<RouteSpec>> {
        toml::from_str::<crate::manifest::RoutesFile>(src)
            .unwrap()
            .routes
    }

    #[test]
    fn overlap_across_files_names_the_later_route_in_its_own_file() {
        let a_text =
            "\n[[routes]]\nmethod = \"GET\"\npath = \"/a/{x}\"\nservice = \"s\"\naction = \"a\"\n";
        let b_src = "[[routes]]\nmethod = \"GET\"\npath = \"/other\"\nservice = \"s\"\naction = \"o\"\n\n[[routes]]\nmethod = \"GET\"\npath = \"/a/{y}\"\nservice = \"s\"\naction = \"b\"\n";
        let a_routes = specs(a_text);
        let b_routes = specs(b_src);
        let e = RouteTable::build_from(&[
            RouteSource {
                file: Path::new("bundle.toml"),
                source: a_text,
                specs: &a_routes,
            },
            RouteSource {
                file: Path::new("routes.toml"),
                source: b_src,
                specs: &b_routes,
            },
        ])
        .unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        let d = &e.0[0];
        assert_eq!(d.file, Path::new("routes.toml"));
        assert_eq!(d.line, Some(7), "the second route of routes.toml: {e}");
        assert!(
            d.message.contains("(bundle.toml:2)"),
            "names the other route: {e}"
        );
    }

    #[test]
    fn identical_routes_point_at_the_second() {
        let src = "[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"s\"\naction = \"a\"\n[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"s\"\naction = \"b\"\n";
        let e = table(src).unwrap_err();
        assert_eq!(e.0[0].line, Some(6), "{e}");
    }

    #[test]
    fn a_host_with_a_port_or_scheme_is_refused() {
        for host in ["api.example.com:8443", "https://api.example.com", "a b", ""] {
            let src = format!(
                "[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nhost = \"{host}\"\nservice = \"s\"\naction = \"a\"\n"
            );
            let e = table(&src).unwrap_err();
            assert!(e.to_string().contains("field `host`"), "{host}: {e}");
        }
        let ok = "[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nhost = \"[::1]\"\nservice = \"s\"\naction = \"a\"\n";
        let t = table(ok).unwrap();
        // An IPv6 host matches with or without its port.
        assert!(t.find("GET", Some("[::1]:8080"), "/a").is_some());
        assert!(t.find("GET", Some("[::1]"), "/a").is_some());
        assert!(t.find("GET", Some("[::2]:8080"), "/a").is_none());
    }
}
