//! CORS (Envoy `envoy.filters.http.cors` with a route's `corsPolicy`).
//!
//! * A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//!   from an allowed origin is answered locally: 200 with the allow headers.
//! * A preflight from another origin is forwarded upstream when
//!   `unmatchedPreflights` is FORWARD (Istio's default), else answered with a
//!   bare 200 (no CORS headers).
//! * Other requests from an allowed origin get `access-control-allow-origin`
//!   (the origin echoed, never `*`), `-allow-credentials` and `-expose-headers`
//!   on the response.
//!
//! An `allowOrigins` exact entry `*` allows every origin, as in Envoy.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use weir_compile::model::Cors;

use crate::body::RespBody;
use crate::router::Text;

#[derive(Debug)]
pub(crate) struct Policy {
    origins: Vec<Text>,
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
    forward_unmatched: bool,
}

/// What the CORS filter decided for a request.
pub(crate) enum Outcome {
    /// Not a CORS request, or an unmatched preflight forwarded: nothing to add.
    Continue,
    /// A request from an allowed origin: decorate its response with [`Policy::decorate`].
    Allowed(HeaderValue),
    /// Answer locally.
    Respond(Response<RespBody>),
}

fn joined(v: &[weir_compile::model::Str]) -> Option<HeaderValue> {
    if v.is_empty() {
        return None;
    }
    HeaderValue::from_str(&v.join(",")).ok()
}

impl Policy {
    pub fn compile(c: &Cors) -> Policy {
        Policy {
            origins: c.allow_origins.iter().map(Text::compile).collect(),
            methods: joined(&c.allow_methods),
            headers: joined(&c.allow_headers),
            expose: joined(&c.expose_headers),
            max_age: c.max_age.map(|d| HeaderValue::from(d.as_secs())),
            credentials: c.allow_credentials == Some(true),
            forward_unmatched: c.forward_unmatched_preflights,
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|m| matches!(m, Text::Exact(e) if &**e == "*") || m.matches(origin))
    }

    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Outcome {
        let Some(origin) = headers.get(header::ORIGIN) else { return Outcome::Continue };
        let allowed = origin.to_str().is_ok_and(|o| self.allows(o));
        let preflight = method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            return if allowed { Outcome::Allowed(origin.clone()) } else { Outcome::Continue };
        }
        if !allowed {
            if self.forward_unmatched {
                return Outcome::Continue;
            }
            return Outcome::Respond(Response::new(RespBody::empty()));
        }
        let mut resp = Response::new(RespBody::empty());
        *resp.status_mut() = StatusCode::OK;
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(v) = &self.methods {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v.clone());
        }
        if let Some(v) = &self.headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        if let Some(v) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        Outcome::Respond(resp)
    }

    /// Adds the CORS headers of an allowed (non-preflight) request to its response.
    pub fn decorate(&self, headers: &mut HeaderMap, origin: HeaderValue) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(v) = &self.expose {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_compile::model::StringMatcher;

    fn policy(forward: bool) -> Policy {
        Policy::compile(&Cors {
            allow_origins: vec![
                StringMatcher::Exact("https://a.com".into()),
                StringMatcher::Prefix("https://b.".into()),
            ],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-a".into()],
            expose_headers: vec!["x-e".into()],
            max_age: Some(std::time::Duration::from_secs(60)),
            allow_credentials: Some(true),
            forward_unmatched_preflights: forward,
        })
    }

    fn req(origin: &str, preflight: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, origin.parse().unwrap());
        if preflight {
            h.insert(header::ACCESS_CONTROL_REQUEST_METHOD, "POST".parse().unwrap());
        }
        h
    }

    #[test]
    fn preflights() {
        let p = policy(true);
        let Outcome::Respond(r) = p.check(&Method::OPTIONS, &req("https://a.com", true)) else { panic!() };
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.com");
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_METHODS], "GET,POST");
        assert_eq!(r.headers()[header::ACCESS_CONTROL_MAX_AGE], "60");
        assert!(matches!(p.check(&Method::OPTIONS, &req("https://evil.com", true)), Outcome::Continue));
        let Outcome::Respond(r) = policy(false).check(&Method::OPTIONS, &req("https://evil.com", true)) else {
            panic!()
        };
        assert!(r.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }

    #[test]
    fn simple_requests() {
        let p = policy(true);
        let Outcome::Allowed(o) = p.check(&Method::GET, &req("https://b.example", false)) else { panic!() };
        let mut h = HeaderMap::new();
        p.decorate(&mut h, o);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://b.example");
        assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-e");
        assert!(matches!(p.check(&Method::GET, &HeaderMap::new()), Outcome::Continue));
    }
}
