//! [`KvClient`]: a small HTTP client of the API, used by the `synevi-kv get|put|cas|delete`
//! commands and by the tests.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not a usable `http://host:port` URL.
    #[error("bad address {0:?}: expected http://HOST:PORT")]
    BadAddress(String),
    /// No connection could be made: the request was certainly not sent.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection failed after the request may have been sent: it may have taken effect.
    #[error("request failed: {0}")]
    Transport(String),
    /// No answer within the client's timeout: the request may have taken effect.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server answered with a status the operation does not expect (400, 503, ...).
    #[error("{status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The `error` field of the answer, or its body.
        message: String,
    },
    /// The answer is not the JSON the API promises.
    #[error("unexpected answer ({status}): {body}")]
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
}

impl ClientError {
    /// Whether the request may have taken effect although no answer says so (it was sent,
    /// or may have been, and the outcome is unknown). A 503 counts: its transaction may
    /// still commit later.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ClientError::BadAddress(_) | ClientError::Connect(_) => false,
            ClientError::Transport(_) | ClientError::Timeout(_) => true,
            ClientError::Status { status, .. } => *status >= 500,
            ClientError::Unexpected { .. } => true,
        }
    }
}

/// An HTTP answer: the status and the body's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl RawResponse {
    /// The body as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A client of one node's HTTP API. Cheap to clone; connections are pooled.
#[derive(Clone, Debug)]
pub struct KvClient {
    base: String,
    timeout: Duration,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl KvClient {
    /// A client of the node at `addr` (`http://127.0.0.1:8081`; `http://` may be left out),
    /// waiting at most `timeout` for each answer.
    pub fn new(addr: &str, timeout: Duration) -> Result<KvClient, ClientError> {
        let with_scheme = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let authority = with_scheme
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|authority| !authority.is_empty() && !authority.contains('/'))
            .ok_or_else(|| ClientError::BadAddress(addr.to_string()))?;
        let base = format!("http://{authority}");
        if base.parse::<hyper::Uri>().is_err() {
            return Err(ClientError::BadAddress(addr.to_string()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(KvClient {
            base,
            timeout,
            http,
        })
    }

    /// The node's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request to `path` (which starts with `/`) and returns the answer whatever its
    /// status.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<RawResponse, ClientError> {
        let uri = format!("{}{path}", self.base);
        let mut builder = Request::builder().method(method).uri(&uri);
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| ClientError::BadAddress(uri.clone()))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|error| {
                if error.is_connect() {
                    ClientError::Connect(error_chain(&error))
                } else {
                    ClientError::Transport(error_chain(&error))
                }
            })?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| ClientError::Transport(error_chain(&error)))?
                .to_bytes();
            Ok(RawResponse {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }

    /// Reads `key`: its value, or `None` if it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<String>, ClientError> {
        let response = self.request(Method::GET, &key_path(key, ""), None).await?;
        match response.status {
            200 => string_field(&response, "value").map(Some),
            404 => Ok(None),
            _ => Err(status_error(&response)),
        }
    }

    /// Sets `key` to `value`; returns the previous value.
    pub async fn put(&self, key: &str, value: &str) -> Result<Option<String>, ClientError> {
        let body = json!({ "value": value }).to_string();
        let response = self
            .request(Method::PUT, &key_path(key, ""), Some(body))
            .await?;
        match response.status {
            200 => nullable_field(&response, "previous"),
            _ => Err(status_error(&response)),
        }
    }

    /// Sets `key` to `value` if it holds `expected` (`None`: if it does not exist). `Ok(Ok(()))`
    /// when swapped, `Ok(Err(current))` when the key held `current` instead.
    pub async fn cas(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> Result<Result<(), Option<String>>, ClientError> {
        let body = json!({ "expected": expected, "value": value }).to_string();
        let response = self
            .request(Method::POST, &key_path(key, "/cas"), Some(body))
            .await?;
        match response.status {
            200 => Ok(Ok(())),
            409 => nullable_field(&response, "current").map(Err),
            _ => Err(status_error(&response)),
        }
    }

    /// Removes `key`; returns the value it had (`None`: it did not exist).
    pub async fn delete(&self, key: &str) -> Result<Option<String>, ClientError> {
        let response = self
            .request(Method::DELETE, &key_path(key, ""), None)
            .await?;
        match response.status {
            200 => string_field(&response, "previous").map(Some),
            404 => Ok(None),
            _ => Err(status_error(&response)),
        }
    }

    /// Whether the node answers `/health` with 200.
    pub async fn healthy(&self) -> bool {
        matches!(
            self.request(Method::GET, "/health", None).await,
            Ok(RawResponse { status: 200, .. })
        )
    }
}

/// `/kv/{key}{suffix}`, the key percent-encoded (everything but unreserved characters).
pub fn key_path(key: &str, suffix: &str) -> String {
    let mut path = String::from("/kv/");
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path.push_str(suffix);
    path
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn status_error(response: &RawResponse) -> ClientError {
    let message = match response.json().get("error") {
        Some(Value::String(message)) => message.clone(),
        _ => response.body.clone(),
    };
    ClientError::Status {
        status: response.status,
        message,
    }
}

fn unexpected(response: &RawResponse) -> ClientError {
    ClientError::Unexpected {
        status: response.status,
        body: response.body.clone(),
    }
}

fn string_field(response: &RawResponse, field: &str) -> Result<String, ClientError> {
    match response.json().get(field) {
        Some(Value::String(value)) => Ok(value.clone()),
        _ => Err(unexpected(response)),
    }
}

fn nullable_field(response: &RawResponse, field: &str) -> Result<Option<String>, ClientError> {
    match response.json().get(field) {
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(Value::Null) => Ok(None),
        _ => Err(unexpected(response)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(key_path("abc-1.2_~", ""), "/kv/abc-1.2_~");
        assert_eq!(key_path("a/b c", "/cas"), "/kv/a%2Fb%20c/cas");
        assert_eq!(key_path("ü", ""), "/kv/%C3%BC");
    }

    #[test]
    fn addresses_are_checked() {
        let timeout = Duration::from_secs(1);
        assert!(KvClient::new("127.0.0.1:8081", timeout).is_ok());
        assert_eq!(
            KvClient::new("http://127.0.0.1:8081/", timeout)
                .map(|client| client.base().to_string())
                .ok(),
            Some("http://127.0.0.1:8081".to_string())
        );
        assert!(KvClient::new("https://127.0.0.1:8081", timeout).is_err());
        assert!(KvClient::new("http://", timeout).is_err());
        assert!(KvClient::new("http://a b", timeout).is_err());
    }
}
