//! HTTP client side of the harness: one request per call with ureq, no redirects
//! followed, no retries, no content decoding, and the response kept byte for byte.

use std::time::Duration;

/// An HTTP response as the test sees it.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The response headers, names in lower case, in the order each name first appeared;
    /// a header sent several times has one entry per occurrence (in the order sent), next
    /// to each other. Values that are not UTF-8 are converted lossily.
    pub headers: Vec<(String, String)>,
    /// The body exactly as sent (after de-chunking; never decompressed or re-encoded).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How long one request may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one request and reads the whole response; `Err` describes a transport failure
/// (connection refused or reset, timeout, malformed response).
///
/// A body is sent (with `Content-Length`, unless `headers` set `Content-Length` or
/// `Transfer-Encoding` themselves) when it is not empty or the method is POST, PUT or
/// PATCH. ureq adds `Host`, `User-Agent` and `Accept` when `headers` lack them.
pub(crate) fn send(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .allow_non_standard_methods(true)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .build()
        .into();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let describe = |e: &dyn std::fmt::Display| format!("{method} {url}: {e}");
    let sends_body = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
    let result = if sends_body {
        agent.run(builder.body(body).map_err(|e| describe(&e))?)
    } else {
        agent.run(builder.body(()).map_err(|e| describe(&e))?)
    };
    let mut response = result.map_err(|e| describe(&e))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .map_err(|e| describe(&e))?;
    Ok(Response {
        status,
        headers,
        body,
    })
}
