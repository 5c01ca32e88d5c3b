//! Hostile or broken HTTP clients against a real neuron: slow headers (on the API and the metrics
//! port) and trickled bodies are cut off at their deadlines while everyone else is served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{client, tiny_model, Neuron, TempDir};

fn neuron_with_short_deadlines(dir: &TempDir) -> Neuron {
    tiny_model(dir.path(), "tiny");
    let config = dir.path().join("cortex.toml");
    std::fs::write(&config, "[server]\nheader_timeout_secs = 1\nbody_timeout_secs = 2\n").unwrap();
    Neuron::start(dir.path(), &["--config", config.to_str().unwrap()])
}

fn connect(n: &Neuron) -> TcpStream {
    let s = TcpStream::connect(n.http.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Everything the server sends until it closes the connection (or the read timeout says it did
/// not).
fn read_until_closed(s: &mut TcpStream) -> Result<String, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(String::from_utf8_lossy(&out).into_owned()),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(String::from_utf8_lossy(&out).into_owned())
            }
            Err(e) => return Err(format!("still open after 15 s ({e}); got {:?}", String::from_utf8_lossy(&out))),
        }
    }
}

#[test]
fn a_client_that_trickles_its_headers_is_cut_off_while_others_are_served() {
    let dir = TempDir::new("slow-headers");
    let n = neuron_with_short_deadlines(&dir);
    let mut slow = connect(&n);
    let t0 = Instant::now();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: neuron\r\n").unwrap();
    // The rest of the headers never comes; meanwhile another client is served at once.
    let ok = client().get(n.url("/health")).send().unwrap();
    assert!(ok.status().is_success());
    read_until_closed(&mut slow).unwrap();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(900), "closed before the header deadline: {took:?}");
    assert!(client().get(n.url("/health")).send().unwrap().status().is_success(), "{}", n.log());
}

#[test]
fn the_metrics_port_cuts_off_trickled_headers_too() {
    let dir = TempDir::new("slow-metrics-headers");
    let n = neuron_with_short_deadlines(&dir);
    let mut slow = TcpStream::connect(n.metrics.trim_start_matches("http://")).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let t0 = Instant::now();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: neuron\r\n").unwrap();
    // Prometheus scraping goes on meanwhile.
    assert!(n.metric("cortex_in_flight_requests", &[]) == 0.0);
    let answer = read_until_closed(&mut slow).unwrap();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(900), "closed before the header deadline: {took:?}");
    assert!(!answer.contains("cortex_"), "answered a request whose headers never ended: {answer}");
    assert!(n.metric("cortex_in_flight_requests", &[]) == 0.0, "{}", n.log());
}

#[test]
fn a_trickled_body_is_refused_in_the_callers_dialect_and_the_connection_closed() {
    let dir = TempDir::new("slow-body");
    let n = neuron_with_short_deadlines(&dir);
    let mut slow = connect(&n);
    let body = br#"{"model":"tiny","max_tokens":4,"messages":[{"role":"user","content":"hello there"}]}"#;
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: neuron\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).unwrap();
    // One byte every 300 ms: the whole body would take ~25 s; the deadline is 2 s.
    let writer = {
        let mut w = slow.try_clone().unwrap();
        let body = body.to_vec();
        std::thread::spawn(move || {
            for b in body {
                if w.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let answer = read_until_closed(&mut slow).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#""type":"error""#) && answer.contains("invalid_request_error"), "{answer}");
    assert!(answer.contains("did not arrive in time"), "{answer}");
    drop(writer);
    // A prompt client is unaffected.
    let ok = client()
        .post(n.url("/v1/messages"))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200, "{}", n.log());
}
