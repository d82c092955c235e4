//! OpenTelemetry traces end to end: the real proxy exports to a collector stand-in on 127.0.0.1 that decodes what
//! it receives (OTLP over HTTP/protobuf at `/v1/traces`, and over gRPC `TraceService/Export`), in front of the
//! real demo upstream, which echoes the `traceparent` it got. Spans are flushed with the SDK's `force_flush`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use support::{Harness, client, reply, within};
use tokio::net::TcpListener;

/// A span as the collector received it, with the `service.name` of its resource.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    span: Span,
}

impl Got {
    fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                AnyValue::StringValue(s) => s.clone(),
                AnyValue::IntValue(i) => i.to_string(),
                other => format!("{other:?}"),
            })
    }
    fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }
    fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }
}

/// The collector stand-in: decodes every export it receives, over HTTP/1.1 or HTTP/2 (gRPC).
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Got>>>,
    /// The request paths it was sent to.
    paths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl Collector {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
        let paths: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, p) = (spans.clone(), paths.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, p) = (s.clone(), p.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (s, p) = (s.clone(), p.clone());
                        async move { Ok::<_, Infallible>(export(req, &s, &p).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            spans,
            paths,
            task,
        }
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }
}

/// Decodes one export and answers it as a collector would.
async fn export(
    req: Request<Incoming>,
    spans: &Mutex<Vec<Got>>,
    paths: &Mutex<Vec<String>>,
) -> Response<BoxBody<Bytes, Infallible>> {
    let path = req.uri().path().to_string();
    paths.lock().unwrap().push(path.clone());
    let grpc = path == GRPC_PATH;
    assert!(grpc || path == "/v1/traces", "unexpected path {path}");
    assert_eq!(req.method(), http::Method::POST);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    // gRPC frames the message: a compressed flag and a 4-byte big-endian length.
    let message = if grpc {
        assert_eq!(body[0], 0, "uncompressed");
        let len = u32::from_be_bytes(<[u8; 4]>::try_from(&body[1..5]).unwrap()) as usize;
        body.slice(5..5 + len)
    } else {
        body
    };
    let decoded = ExportTraceServiceRequest::decode(message).expect("an OTLP trace export");
    for rs in decoded.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                spans.lock().unwrap().push(Got {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    if grpc {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(answer.len() as u32).to_be_bytes());
        framed.extend_from_slice(&answer);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = futures_util::stream::iter([
            Ok::<_, Infallible>(Frame::data(Bytes::from(framed))),
            Ok(Frame::trailers(trailers)),
        ]);
        Response::builder()
            .header("content-type", "application/grpc")
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .unwrap()
    } else {
        Response::builder()
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(answer)).boxed())
            .unwrap()
    }
}

/// Exports every finished span now (the SDK blocks until the collector answered: off the runtime's workers).
async fn flush(h: &Harness) {
    let proxy = h.running.as_ref().unwrap().proxy.clone();
    within(
        "force_flush",
        tokio::task::spawn_blocking(move || proxy.telemetry.as_ref().unwrap().force_flush()),
    )
    .await
    .unwrap()
    .unwrap();
}

/// `00-<trace id>-<parent id>-<flags>` split.
fn parse_traceparent(tp: &str) -> (String, String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

fn caller_traceparent() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

/// The spans of one request: its server span (by decision id) and that span's children by name.
fn request_spans(all: &[Got], decision_id: &str) -> (Got, Vec<Got>) {
    let root = all
        .iter()
        .find(|g| g.attr("jitgate.decision_id").as_deref() == Some(decision_id))
        .unwrap_or_else(|| panic!("no span for decision {decision_id}: {all:#?}"))
        .clone();
    let children = all
        .iter()
        .filter(|g| g.parent_id() == root.span_id())
        .cloned()
        .collect();
    (root, children)
}

fn names(children: &[Got]) -> Vec<String> {
    let mut n: Vec<String> = children.iter().map(|g| g.span.name.clone()).collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_spans_name_the_decision_and_a_callers_traceparent_is_replaced() {
    let collector = Collector::start().await;
    let endpoint = format!("http://{}", collector.addr);
    let h = Harness::start_with(|raw, _| {
        raw.telemetry.otlp_endpoint = Some(endpoint);
        raw.telemetry.otlp_protocol = Some("http/protobuf".into());
        raw.telemetry.service_name = Some("jitgate-under-test".into());
    })
    .await;
    let c = client();

    // Allowed: alice reads a payment; the caller's own traceparent is not trusted.
    let r = reply(
        c.get(h.url("/payments/p1"))
            .bearer_auth(h.token("alice", &["engineering"]))
            .header("traceparent", caller_traceparent())
            .header("tracestate", "vendor=caller")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let allowed_id = r.upstream_decision_id();
    let upstream_tp = r.json["headers"]["traceparent"]
        .as_str()
        .expect("the upstream got a traceparent")
        .to_string();
    assert!(
        r.json["headers"].get("tracestate").is_none(),
        "an untrusted caller's tracestate reached the upstream: {:?}",
        r.json["headers"]
    );
    let (up_trace, up_parent, flags) = parse_traceparent(&upstream_tp);
    assert_ne!(
        up_trace, CALLER_TRACE,
        "an untrusted traceparent was continued"
    );
    assert_eq!(flags, "01", "sampled");
    let record = h.record(&allowed_id);
    assert_eq!(record.context["trace_id"], up_trace.as_str());

    // Denied: dave (a contractor) may not read databases.
    let denied = reply(
        c.get(h.url("/databases/ledger"))
            .bearer_auth(h.token("dave", &["contractors"]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(denied.status, 403);
    let denied_id = denied.decision_id();
    let denied_trace = h.record(&denied_id).context["trace_id"]
        .as_str()
        .unwrap()
        .to_string();

    flush(&h).await;
    let all = collector.spans();
    assert!(
        collector
            .paths
            .lock()
            .unwrap()
            .iter()
            .all(|p| p == "/v1/traces"),
        "HTTP exports go to /v1/traces"
    );

    let (root, children) = request_spans(&all, &allowed_id);
    assert_eq!(root.service, "jitgate-under-test");
    assert_eq!(root.span.kind, SpanKind::Server as i32);
    assert_eq!(
        root.trace_id(),
        up_trace,
        "the record, the span and the upstream name one trace"
    );
    assert!(root.span.parent_span_id.is_empty(), "a new trace: {root:?}");
    assert_eq!(root.span.name, "GET /payments/{id}");
    assert_eq!(root.attr("http.route").as_deref(), Some("/payments/{id}"));
    assert_eq!(root.attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(
        root.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        root.attr("jitgate.principal").as_deref(),
        Some("User::\"alice\"")
    );
    assert_eq!(
        root.attr("jitgate.action").as_deref(),
        Some(record.action.as_str())
    );
    assert_eq!(
        root.attr("jitgate.resource").as_deref(),
        Some(record.resource.as_str())
    );
    assert_eq!(root.attr("jitgate.decision").as_deref(), Some("allow"));
    assert_eq!(
        names(&children),
        [
            "admit",
            "authenticate",
            "authorize",
            "forward",
            "log",
            "map"
        ]
    );
    for child in &children {
        assert_eq!(child.trace_id(), root.trace_id());
        assert!(child.span.start_time_unix_nano >= root.span.start_time_unix_nano);
        assert!(child.span.end_time_unix_nano <= root.span.end_time_unix_nano);
    }
    let forward = children.iter().find(|g| g.span.name == "forward").unwrap();
    assert_eq!(
        up_parent,
        forward.span_id(),
        "the upstream's parent is the forward span"
    );

    let (root, children) = request_spans(&all, &denied_id);
    assert_eq!(root.trace_id(), denied_trace);
    assert_eq!(root.attr("jitgate.decision").as_deref(), Some("deny"));
    assert_eq!(
        root.attr("http.response.status_code").as_deref(),
        Some("403")
    );
    assert_eq!(
        names(&children),
        ["admit", "authenticate", "authorize", "log", "map"],
        "a denied request is never forwarded"
    );
    h.assert_log(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_continues_a_trusted_callers_trace() {
    let collector = Collector::start().await;
    let endpoint = format!("http://{}", collector.addr);
    let h = Harness::start_with(|raw, _| {
        raw.telemetry.otlp_endpoint = Some(endpoint);
        raw.telemetry.otlp_protocol = Some("grpc".into());
        raw.telemetry.trust_incoming = true;
    })
    .await;
    let r = reply(
        client()
            .get(h.url("/payments/p1"))
            .bearer_auth(h.token("alice", &["engineering"]))
            .header("traceparent", caller_traceparent())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let id = r.upstream_decision_id();
    let (up_trace, up_parent, _) =
        parse_traceparent(r.json["headers"]["traceparent"].as_str().unwrap());
    assert_eq!(
        up_trace, CALLER_TRACE,
        "a trusted caller's trace is continued"
    );
    assert_ne!(
        up_parent, CALLER_SPAN,
        "the upstream's parent is jitgate's span"
    );
    assert_eq!(h.record(&id).context["trace_id"], CALLER_TRACE);

    flush(&h).await;
    assert!(
        collector
            .paths
            .lock()
            .unwrap()
            .iter()
            .all(|p| p == GRPC_PATH),
        "gRPC exports call TraceService/Export"
    );
    let all = collector.spans();
    let (root, children) = request_spans(&all, &id);
    assert_eq!(root.service, "jitgate", "the default service name");
    assert_eq!(root.trace_id(), CALLER_TRACE);
    assert_eq!(
        root.parent_id(),
        CALLER_SPAN,
        "the caller's span is the parent"
    );
    let forward = children.iter().find(|g| g.span.name == "forward").unwrap();
    assert_eq!(up_parent, forward.span_id());
    h.assert_log(1);
}

#[tokio::test]
async fn traces_off_leave_the_record_and_the_callers_traceparent_alone() {
    let h = Harness::start().await;
    assert!(h.running.as_ref().unwrap().proxy.telemetry.is_none());
    let r = reply(
        client()
            .get(h.url("/payments/p1"))
            .bearer_auth(h.token("alice", &["engineering"]))
            .header("traceparent", caller_traceparent())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let id = r.upstream_decision_id();
    assert!(h.record(&id).context.get("trace_id").is_none());
    // jitgate takes no part in the trace: the header passes as any other end-to-end header does.
    assert_eq!(
        r.json["headers"]["traceparent"],
        caller_traceparent().as_str()
    );
}
