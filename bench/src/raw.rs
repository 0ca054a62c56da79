//! A lean HTTP/1.1 client for the measured loop: one keep-alive connection,
//! one prebuilt request, the answer checked for its status and read to its
//! end. A general client (hyper's pool) cost about 35 us per request on this
//! machine, a third of a one-client round trip, and the load generator
//! shares the CPU with the server it measures; wrk works the same way.

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawConn {
    addr: String,
    request: Vec<u8>,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
}

/// What the head of a response says.
struct Head {
    status: u16,
    len: Option<usize>,
    close: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> anyhow::Result<Head> {
    let text = std::str::from_utf8(head).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut head = Head {
        status,
        len: None,
        close: version != "HTTP/1.1",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.len = Some(value.parse().context("bad content-length")?);
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked responses are not supported by the lean client");
        }
    }
    Ok(head)
}

impl RawConn {
    /// `target` is `http://host:port`.
    pub fn new(target: &str, headers: &[(&str, String)], body: &[u8]) -> anyhow::Result<Self> {
        let addr = target
            .strip_prefix("http://")
            .context("target must be http://host:port")?
            .trim_end_matches('/')
            .to_string();
        let mut request = format!("POST / HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut request = request.into_bytes();
        request.extend_from_slice(body);
        Ok(RawConn {
            addr,
            request,
            conn: None,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends the request once; Ok if the answer was 2xx.
    pub async fn call(&mut self) -> anyhow::Result<()> {
        let result = self.exchange().await;
        if result.is_err() {
            self.conn = None;
        }
        let head = result?;
        if head.close {
            self.conn = None;
        }
        if !(200..300).contains(&head.status) {
            bail!("HTTP {}", head.status);
        }
        Ok(())
    }

    async fn exchange(&mut self) -> anyhow::Result<Head> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.addr).await?;
            s.set_nodelay(true)?;
            self.conn = Some(s);
        }
        let Some(s) = self.conn.as_mut() else {
            bail!("no connection");
        };
        s.write_all(&self.request).await?;
        self.buf.clear();
        let (head, body_start) = loop {
            if s.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed before the response head");
            }
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break (parse_head(&self.buf[..i])?, i + 4);
            }
        };
        match head.len {
            Some(len) => {
                while self.buf.len() < body_start + len {
                    if s.read_buf(&mut self.buf).await? == 0 {
                        bail!("connection closed inside the response body");
                    }
                }
            }
            None => while s.read_buf(&mut self.buf).await? != 0 {},
        }
        Ok(Head {
            close: head.close || head.len.is_none(),
            ..head
        })
    }
}
