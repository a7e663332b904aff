//! `modbus-sim client`: runs OPs in order on one connection and prints one
//! JSON line per OP. After a connection error or timeout the next request
//! opens a new connection first, as a SCADA master recovering from a reset.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    cli::{Action, ClientArgs},
    wire::{self, Conn, Failure},
};

/// One output line; field order is the wire format shared with the Python client.
#[derive(Debug, Serialize)]
pub struct OpLine<'a> {
    pub op: &'a str,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// The Modbus exception code, for `kind == "exception"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
    pub ms: f64,
}

impl<'a> OpLine<'a> {
    fn new(op: &'a str, result: Result<Option<Vec<u16>>, Failure>, elapsed: Duration) -> Self {
        let ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
        match result {
            Ok(values) => Self {
                op,
                ok: true,
                values,
                error: None,
                kind: None,
                code: None,
                ms,
            },
            Err(f) => Self {
                op,
                ok: false,
                values: None,
                error: Some(f.to_string()),
                kind: Some(f.kind()),
                code: f.exception_code(),
                ms,
            },
        }
    }
}

pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut conn: Option<Conn> = None;
    for op in &args.ops {
        let start = Instant::now();
        let result = match &op.action {
            Action::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                Ok(None)
            }
            Action::Reconnect => {
                conn = None;
                match tokio::time::timeout(timeout, Conn::connect(args.connect, args.unit)).await {
                    Ok(Ok(c)) => {
                        conn = Some(c);
                        Ok(None)
                    }
                    Ok(Err(e)) => Err(Failure::from(e)),
                    Err(_) => Err(Failure::Timeout(args.timeout_ms)),
                }
            }
            Action::Modbus(req) => {
                let pdu = wire::encode(req);
                wire::exchange(&mut conn, args.connect, args.unit, &pdu, timeout)
                    .await
                    .and_then(|rsp| wire::decode(req, &rsp))
                    .map(Some)
            }
        };
        if result.as_ref().is_err_and(Failure::breaks_connection) {
            conn = None;
        }
        let line = serde_json::to_string(&OpLine::new(&op.text, result, start.elapsed()))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let ok = OpLine::new(
            "read-holding:0:2",
            Ok(Some(vec![0, 1])),
            Duration::from_micros(412),
        );
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"op":"read-holding:0:2","ok":true,"values":[0,1],"ms":0.412}"#
        );
        let exc = OpLine::new(
            "write-register:41:1",
            Err(Failure::Exception(2)),
            Duration::from_millis(1),
        );
        assert_eq!(
            serde_json::to_string(&exc).unwrap(),
            r#"{"op":"write-register:41:1","ok":false,"error":"modbus exception 2 (illegal data address)","kind":"exception","code":2,"ms":1.0}"#
        );
        let io = OpLine::new(
            "reconnect",
            Err(Failure::Io("connection refused".into())),
            Duration::ZERO,
        );
        assert_eq!(
            serde_json::to_string(&io).unwrap(),
            r#"{"op":"reconnect","ok":false,"error":"connection refused","kind":"io","ms":0.0}"#
        );
    }
}
