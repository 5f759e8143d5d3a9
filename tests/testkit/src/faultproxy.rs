//! A small HTTP proxy on 127.0.0.1 in front of the real S3 server that injects the network
//! faults S3 clients meet: a reply lost after the server applied the request, and a body cut
//! off mid-transfer. Every request reaches the real server unchanged (unless the proxy is told
//! to play a store that ignores conditional writes); only what comes back is damaged, and only
//! for the requests a test names.

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What happens to a matching exchange.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// The server applied the request and answered 2xx; the client gets no reply at all (the
    /// connection closes), so it cannot know the write landed.
    DropReply,
    /// The client gets the status and headers and only the first `after` bytes of the body,
    /// then the connection closes.
    CutBody { after: usize },
}

/// Which exchanges a rule damages.
#[derive(Debug, Clone)]
pub struct Match {
    pub method: &'static str,
    /// The request path (without the query) ends with this.
    pub path_suffix: String,
    /// The request carries this header (e.g. `if-match`), if set.
    pub header: Option<&'static str>,
}

#[derive(Debug)]
struct Rule {
    matches: Match,
    fault: Fault,
    remaining: usize,
    fired: usize,
}

/// Handle to one rule, for asking how often it fired.
#[derive(Debug, Clone, Copy)]
pub struct RuleId(usize);

type Rules = Arc<Mutex<Vec<Rule>>>;

/// The proxy: point an S3 client's endpoint at `endpoint`.
pub struct FaultProxy {
    pub endpoint: String,
    rules: Rules,
    strip_conditions: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`http://host:port`), running until the test
    /// process exits.
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("plain http upstream")
            .trim_end_matches('/')
            .to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let rules: Rules = Arc::default();
        let shared = rules.clone();
        let strip_conditions = Arc::new(AtomicBool::new(false));
        let strip = strip_conditions.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(serve(listener, upstream, shared, strip));
        });
        FaultProxy {
            endpoint,
            rules,
            strip_conditions,
        }
    }

    /// From now on, drops `If-None-Match` and `If-Match` from every request it forwards: the
    /// store behind it then behaves like one that ignores conditional writes.
    pub fn ignore_conditional_writes(&self) {
        self.strip_conditions.store(true, Ordering::SeqCst);
    }

    /// Damages the next `times` exchanges that match.
    pub fn inject(&self, matches: Match, fault: Fault, times: usize) -> RuleId {
        let mut rules = self.rules.lock().unwrap();
        rules.push(Rule {
            matches,
            fault,
            remaining: times,
            fired: 0,
        });
        RuleId(rules.len() - 1)
    }

    /// How many exchanges the rule damaged.
    pub fn fired(&self, rule: RuleId) -> usize {
        self.rules.lock().unwrap()[rule.0].fired
    }
}

async fn serve(listener: std::net::TcpListener, upstream: String, rules: Rules, strip: Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (client, upstream, rules, strip) =
            (client.clone(), upstream.clone(), rules.clone(), strip.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let strip = strip.load(Ordering::SeqCst);
                forward(request, client.clone(), upstream.clone(), rules.clone(), strip)
            });
            // A dropped reply ends the connection with an error: that is the point.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type ProxyBody = BoxBody<Bytes, io::Error>;

async fn forward(
    request: Request<Incoming>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
    rules: Rules,
    strip_conditions: bool,
) -> Result<Response<ProxyBody>, io::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut outgoing = Request::builder()
        .method(parts.method.clone())
        .uri(format!("http://{upstream}{path_and_query}"));
    for (name, value) in &parts.headers {
        if strip_conditions && (name == "if-none-match" || name == "if-match") {
            continue;
        }
        outgoing = outgoing.header(name, value);
    }
    let outgoing = outgoing.body(Full::new(body)).map_err(io::Error::other)?;
    let reply = client.request(outgoing).await.map_err(io::Error::other)?;
    let (reply_parts, reply_body) = reply.into_parts();
    let reply_body = reply_body.collect().await.map_err(io::Error::other)?.to_bytes();

    let fault = {
        let mut rules = rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|rule| {
                let m = &rule.matches;
                rule.remaining > 0
                    && parts.method.as_str() == m.method
                    && parts.uri.path().ends_with(&m.path_suffix)
                    && m.header.is_none_or(|h| parts.headers.contains_key(h))
                    && reply_parts.status.is_success()
            })
            .map(|rule| {
                rule.remaining -= 1;
                rule.fired += 1;
                rule.fault
            })
    };
    let body: ProxyBody = match fault {
        None => Full::new(reply_body)
            .map_err(|never: Infallible| match never {})
            .boxed(),
        Some(Fault::DropReply) => return Err(io::Error::other("reply dropped by the test proxy")),
        Some(Fault::CutBody { after }) => {
            use futures::StreamExt as _;
            let head = reply_body.slice(..after.min(reply_body.len()));
            // The pause lets the status, headers and head reach the client first: cut at once,
            // the whole reply would be lost and the client would simply retry the request.
            let cut = futures::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                Err(io::Error::other("body cut by the test proxy"))
            });
            let frames = futures::stream::iter([Ok(Frame::data(head))]).chain(cut);
            BodyExt::boxed(StreamBody::new(frames))
        }
    };
    Ok(Response::from_parts(reply_parts, body))
}
