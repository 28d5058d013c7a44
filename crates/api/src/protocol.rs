//! Port protocols as Istio names them (`protocol` fields and port-name prefixes).

use std::fmt;

/// A port protocol (`pkg/config/protocol` in Istio). Parsing is case-insensitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Http2,
    HttpProxy,
    Https,
    Grpc,
    GrpcWeb,
    Tcp,
    Tls,
    Udp,
    Mongo,
    Redis,
    Mysql,
}

impl Protocol {
    /// `None` for names Istio does not know (its `Unsupported`).
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "http_proxy" => Protocol::HttpProxy,
            "https" => Protocol::Https,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => return None,
        })
    }

    /// The protocol implied by a port name such as `http-web` or `grpc`
    /// (Kubernetes Service convention); `None` means "sniff".
    pub fn from_port_name(name: &str) -> Option<Protocol> {
        let prefix = name.split('-').next().unwrap_or(name);
        match Protocol::parse(prefix) {
            // `grpc-web` is a whole protocol name, not a prefix plus suffix.
            Some(Protocol::Grpc) if name.to_ascii_lowercase().starts_with("grpc-web") => Some(Protocol::GrpcWeb),
            p => p,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Https => "HTTPS",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Udp => "UDP",
            Protocol::Mongo => "Mongo",
            Protocol::Redis => "Redis",
            Protocol::Mysql => "MySQL",
        }
    }

    /// HTTP family: routed by VirtualService `http` rules.
    pub fn is_http(&self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::HttpProxy | Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// HTTP/2 family (upstream speaks h2).
    pub fn is_http2(&self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// TLS family: routed by SNI (`tls` rules) unless terminated.
    pub fn is_tls(&self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// Opaque TCP family (`tcp` rules).
    pub fn is_tcp(&self) -> bool {
        matches!(
            self,
            Protocol::Tcp | Protocol::Https | Protocol::Tls | Protocol::Mongo | Protocol::Redis | Protocol::Mysql
        )
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_case_insensitive_and_rejects_unknown() {
        assert_eq!(Protocol::parse("hTTp"), Some(Protocol::Http));
        assert_eq!(Protocol::parse("GRPC-Web"), Some(Protocol::GrpcWeb));
        assert_eq!(Protocol::parse("foo"), None);
        assert_eq!(Protocol::from_port_name("http-web"), Some(Protocol::Http));
        assert_eq!(Protocol::from_port_name("grpc-web-x"), Some(Protocol::GrpcWeb));
        assert_eq!(Protocol::from_port_name("web"), None);
    }
}
