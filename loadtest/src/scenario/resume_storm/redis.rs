//! `INFO commandstats` of a loopback Redis, to count the commands a storm
//! costs. One RESP request on a fresh connection; no client crate for it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// An INFO reply is a few KiB; refuse anything absurd.
const MAX_REPLY: usize = 1 << 20;

/// Calls per command (`cmdstat_xadd:calls=3,...` → `xadd: 3`).
pub async fn commandstats(addr: SocketAddr) -> Result<BTreeMap<String, u64>> {
    let fut = async {
        let mut s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("redis {addr}"))?;
        s.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
            .await?;
        let mut r = BufReader::new(s);
        let mut head = String::new();
        r.read_line(&mut head).await?;
        let len: usize = head
            .strip_prefix('$')
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| anyhow!("redis INFO: unexpected reply `{}`", head.trim()))?;
        if len > MAX_REPLY {
            bail!("redis INFO reply of {len} bytes");
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        Ok(parse(&String::from_utf8_lossy(&body)))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| anyhow!("redis INFO timed out"))?
}

pub fn parse(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// Calls between two readings, without the INFO calls of the readings themselves.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, n)| {
            (
                name.clone(),
                n.saturating_sub(*before.get(name).unwrap_or(&0)),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_subtracts() {
        let a = parse("# Commandstats\r\ncmdstat_xadd:calls=3,usec=10,usec_per_call=3.3\r\ncmdstat_info:calls=1,usec=5\r\n");
        let b = parse("cmdstat_xadd:calls=10,usec=30\r\ncmdstat_evalsha:calls=4,usec=1\r\ncmdstat_info:calls=2,usec=5\r\nnoise\r\n");
        assert_eq!(a["xadd"], 3);
        let d = delta(&a, &b);
        assert_eq!(d.get("xadd"), Some(&7));
        assert_eq!(d.get("evalsha"), Some(&4));
        assert!(!d.contains_key("info"));
    }
}
