//! `include:remote`: a configuration file fetched over HTTP(S) when a pipeline is planned
//! (`Gitlab::Ci::Config::External::File::Remote`): a timeout, at most the loader's size,
//! no redirects, and — unless allowed — no address on the local network, checked on the
//! addresses the request then goes to (GitLab's URL blocker does the same, so that a
//! `.gitlab-ci.yml` cannot make Runway read its own network).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::ci::load::{MAX_YAML_BYTES, TOO_BIG};

/// How long one fetch may take (GitLab's is 30 s; a pipeline waits for it).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches remote includes.
#[derive(Debug, Clone)]
pub struct RemoteIncludes {
    /// Whether loopback and private addresses may be fetched.
    pub allow_local: bool,
}

/// Whether `ip` is on the local network: loopback, private, link-local, shared, unique
/// local, unspecified.
fn local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| local(IpAddr::V4(v4)))
        }
    }
}

impl RemoteIncludes {
    /// The text at `url`, or GitLab's words for why not. Blocks: call it on the blocking
    /// pool, with `runtime` the server's runtime.
    pub fn fetch(&self, runtime: &tokio::runtime::Handle, url: &str) -> Result<String, String> {
        let invalid = || format!("Remote file `{url}` does not have a valid address!");
        let parsed = reqwest::Url::parse(url).map_err(|_| invalid())?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid());
        }
        let host = parsed.host_str().ok_or_else(invalid)?.to_string();
        let port = parsed.port_or_known_default().ok_or_else(invalid)?;
        let addrs: Vec<SocketAddr> = (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .map_err(|_| "Remote file could not be fetched because of a socket error!".to_string())?
            .collect();
        if addrs.is_empty() {
            return Err("Remote file could not be fetched because of a socket error!".into());
        }
        if !self.allow_local && addrs.iter().any(|a| local(a.ip())) {
            return Err(format!(
                "Remote file `{url}` could not be fetched because requests to the local network are not allowed!"
            ));
        }
        // The request goes to the addresses checked, not to a second lookup's.
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .resolve_to_addrs(&host, &addrs)
            .build()
            .map_err(|e| format!("Remote file `{url}` could not be fetched: {e}"))?;
        runtime.block_on(async {
            let timeout =
                || format!("Remote file `{url}` could not be fetched because of a timeout error!");
            let mut response = client.get(parsed.clone()).send().await.map_err(|e| {
                if e.is_timeout() {
                    timeout()
                } else {
                    "Remote file could not be fetched because of a socket error!".to_string()
                }
            })?;
            if !response.status().is_success() {
                return Err(format!(
                    "Remote file `{url}` could not be fetched because of HTTP code `{}` error!",
                    response.status().as_u16()
                ));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|_| timeout())? {
                if body.len() + chunk.len() > MAX_YAML_BYTES {
                    return Err(TOO_BIG.to_string());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(String::from_utf8_lossy(&body).into_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::local;

    #[test]
    fn local_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(local(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!local(ip.parse().expect("ip")), "{ip}");
        }
    }
}
