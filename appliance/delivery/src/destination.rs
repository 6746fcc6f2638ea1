//! Where results go: a board's `forward` list, each entry one of
//!
//! - `AE@HOST:PORT`: a C-STORE SCP (a PACS), sent the SR (and the SC);
//! - `dicomweb:http[s]://HOST:PORT/PATH`: a DICOMweb server, sent the same
//!   objects by STOW-RS to `PATH/studies`;
//! - `fhir:http[s]://HOST:PORT/PATH`: a FHIR R4 server, sent each result
//!   version as one transaction Bundle to `PATH`.
//!
//! An `https://` destination's certificate must chain to the board's
//! `forward_trust_pem` and name the host.
//!
//! The text is what the outbox journals and the operator sees, so it is
//! written back in one normal form.

use cxr_net::scu;

/// An HTTP or HTTPS endpoint: host, port and a base path (no trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpEndpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl HttpEndpoint {
    /// `http[s]://HOST[:PORT][/PATH]`, without user, query or fragment.
    pub fn parse(url: &str) -> Result<HttpEndpoint, String> {
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err(format!("{url:?}: write http[s]://HOST:PORT/PATH")),
        };
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        let path_ok = path
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'\\'));
        if authority.contains('@') || !path_ok {
            return Err(format!(
                "{url:?}: no user, query, fragment or spaces in a destination URL"
            ));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = split_host_port(authority, default_port)
            .ok_or_else(|| format!("{url:?}: the host or port is not valid"))?;
        Ok(HttpEndpoint {
            tls,
            host,
            port,
            path: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The `Host` header's value.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority(), self.path)
    }
}

/// `HOST[:PORT]` or `[V6][:PORT]`; `default_port` when absent.
fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port, bracketed) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None, true),
            p => (host, Some(p.strip_prefix(':')?), true),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p), false),
            None => (authority, None, false),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => p.parse().ok().filter(|p| *p != 0)?,
    };
    // A bracketed host is an IPv6 address; any other is a name or an IPv4
    // address, without a colon.
    let host_ok = if bracketed {
        host.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
    };
    host_ok.then(|| (host.to_owned(), port))
}

/// One destination of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Dicom(scu::Destination),
    DicomWeb(HttpEndpoint),
    Fhir(HttpEndpoint),
}

impl Destination {
    pub fn parse(text: &str) -> Result<Destination, String> {
        if let Some(url) = text.strip_prefix("dicomweb:") {
            return HttpEndpoint::parse(url).map(Destination::DicomWeb);
        }
        if let Some(url) = text.strip_prefix("fhir:") {
            return HttpEndpoint::parse(url).map(Destination::Fhir);
        }
        if text.contains("://") {
            return Err(format!(
                "{text:?}: a web destination starts with dicomweb: or fhir:"
            ));
        }
        scu::Destination::parse(text).map(Destination::Dicom)
    }

    /// The normal form it is shown and journalled under.
    pub fn name(&self) -> String {
        match self {
            Destination::Dicom(d) => d.name(),
            Destination::DicomWeb(e) => format!("dicomweb:{}", e.url()),
            Destination::Fhir(e) => format!("fhir:{}", e.url()),
        }
    }

    /// Whether it is reached over TLS.
    pub fn needs_tls(&self) -> bool {
        match self {
            Destination::Dicom(_) => false,
            Destination::DicomWeb(e) | Destination::Fhir(e) => e.tls,
        }
    }

    /// Whether it takes DICOM objects (the SR and the SC) rather than the
    /// result as FHIR resources.
    pub fn takes_dicom(&self) -> bool {
        !matches!(self, Destination::Fhir(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_parses_to_one_normal_form() {
        let d = Destination::parse("PACS@10.0.0.5:104").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.name(), "PACS@10.0.0.5:104");
        assert!(d.takes_dicom());
        let w = Destination::parse("dicomweb:http://pacs.local:8042/dicom-web/")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.name(), "dicomweb:http://pacs.local:8042/dicom-web");
        assert!(w.takes_dicom());
        let f = Destination::parse("fhir:http://[::1]/fhir").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.name(), "fhir:http://[::1]:80/fhir");
        assert!(!f.takes_dicom());
        assert_eq!(
            Destination::parse(&f.name()).map(|d| d.name()),
            Ok(f.name())
        );
        assert!(!f.needs_tls());
        let secure =
            Destination::parse("fhir:https://fhir.local/r4").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(secure.name(), "fhir:https://fhir.local:443/r4");
        assert!(secure.needs_tls());
    }

    #[test]
    fn bad_destinations_are_refused_with_a_reason() {
        for bad in [
            "http://pacs/dicom-web",
            "dicomweb:htps://pacs/dicom-web",
            "fhir:ftp://x/y",
            "fhir:http://user:pw@x/fhir",
            "fhir:http://x/fhir?a=b",
            "fhir:http://x/fh ir",
            "fhir:http://x:0/fhir",
            "fhir:http://x:99999/fhir",
            "fhir:http:///fhir",
            "fhir:http://[::1/fhir",
            "fhir:http://::1/fhir",
            "fhir:http://[pacs.local]:80/fhir",
            "fhir:http://a:1:2/fhir",
            "fhir:http://a_b/fhir",
            "PACS@host",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
