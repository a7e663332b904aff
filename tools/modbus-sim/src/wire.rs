//! Client side of Modbus/TCP, written out by hand so that every failure can
//! be reported precisely (tokio-modbus' client reports a closed connection as
//! whatever `errno` last held).

use std::{fmt, io, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::cli::Request;

/// Why a transaction failed; `kind()` is the `kind` field of the JSON lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Transport failure or a response that makes no sense; the connection
    /// must be replaced.
    Io(String),
    /// A well-formed Modbus exception response.
    Exception(u8),
    /// No answer within the time limit; the connection must be replaced.
    Timeout(u64),
}

impl Failure {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io(_) => "io",
            Self::Exception(_) => "exception",
            Self::Timeout(_) => "timeout",
        }
    }

    /// True when the connection cannot be used for the next request.
    pub fn breaks_connection(&self) -> bool {
        !matches!(self, Self::Exception(_))
    }

    pub fn exception_code(&self) -> Option<u8> {
        match self {
            Self::Exception(code) => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(msg) => f.write_str(msg),
            Self::Exception(code) => {
                write!(f, "modbus exception {code} ({})", exception_name(*code))
            }
            Self::Timeout(ms) => write!(f, "timed out after {ms} ms"),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self::Io(io_message(&e))
    }
}

/// The same wording as the Python client: strerror(3) in lower case, and
/// "connection closed by peer" for an orderly close.
pub fn io_message(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return "connection closed by peer".to_owned();
    }
    let text = e.to_string();
    let text = match text.find(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.to_lowercase()
}

pub fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        8 => "memory parity error",
        10 => "gateway path unavailable",
        11 => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

/// Request PDU bytes: function code and data.
pub fn encode(req: &Request) -> Vec<u8> {
    let mut pdu = Vec::with_capacity(8);
    let mut put = |fc: u8, words: &[u16]| {
        pdu.push(fc);
        for w in words {
            pdu.extend_from_slice(&w.to_be_bytes());
        }
    };
    match req {
        Request::ReadCoils { addr, qty } => put(1, &[*addr, *qty]),
        Request::ReadHolding { addr, qty } => put(3, &[*addr, *qty]),
        Request::ReadInput { addr, qty } => put(4, &[*addr, *qty]),
        Request::WriteCoil { addr, on } => put(5, &[*addr, if *on { 0xFF00 } else { 0 }]),
        Request::WriteRegister { addr, value } => put(6, &[*addr, *value]),
        Request::WriteRegisters { addr, values } => {
            // The OP parser caps the count at 123, so both fit.
            let n = u16::try_from(values.len()).unwrap_or(u16::MAX);
            put(16, &[*addr, n]);
            pdu.push(u8::try_from(values.len() * 2).unwrap_or(u8::MAX));
            for v in values {
                pdu.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    pdu
}

/// Checks a response PDU against its request. Returns the values read, or
/// for a write the values written (coils as 0/1).
pub fn decode(req: &Request, pdu: &[u8]) -> Result<Vec<u16>, Failure> {
    let sent_fc = encode_fc(req);
    let (&fc, data) = pdu.split_first().ok_or_else(|| invalid("empty PDU"))?;
    if fc == sent_fc | 0x80 {
        return match data {
            [code] => Err(Failure::Exception(*code)),
            _ => Err(invalid("exception response of wrong length")),
        };
    }
    if fc != sent_fc {
        return Err(invalid(&format!("function {fc} in answer to {sent_fc}")));
    }
    match req {
        Request::ReadHolding { qty, .. } | Request::ReadInput { qty, .. } => {
            let body = counted(data, usize::from(*qty) * 2)?;
            Ok(body
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect())
        }
        Request::ReadCoils { qty, .. } => {
            let body = counted(data, usize::from(*qty).div_ceil(8))?;
            Ok((0..usize::from(*qty))
                .map(|i| u16::from((body[i / 8] >> (i % 8)) & 1))
                .collect())
        }
        Request::WriteCoil { on, .. } => {
            echo(data, &encode(req)[1..])?;
            Ok(vec![u16::from(*on)])
        }
        Request::WriteRegister { value, .. } => {
            echo(data, &encode(req)[1..])?;
            Ok(vec![*value])
        }
        Request::WriteRegisters { values, .. } => {
            echo(data, &encode(req)[1..5])?;
            Ok(values.clone())
        }
    }
}

fn encode_fc(req: &Request) -> u8 {
    match req {
        Request::ReadCoils { .. } => 1,
        Request::ReadHolding { .. } => 3,
        Request::ReadInput { .. } => 4,
        Request::WriteCoil { .. } => 5,
        Request::WriteRegister { .. } => 6,
        Request::WriteRegisters { .. } => 16,
    }
}

fn invalid(what: &str) -> Failure {
    Failure::Io(format!("invalid response: {what}"))
}

/// A byte count followed by exactly that many bytes, `expected` of them.
fn counted(data: &[u8], expected: usize) -> Result<&[u8], Failure> {
    match data.split_first() {
        Some((&n, body)) if usize::from(n) == expected && body.len() == expected => Ok(body),
        _ => Err(invalid(&format!("expected {expected} data bytes"))),
    }
}

fn echo(data: &[u8], sent: &[u8]) -> Result<(), Failure> {
    if data == sent {
        Ok(())
    } else {
        Err(invalid("write echo differs from the request"))
    }
}

/// One Modbus/TCP connection with its transaction counter.
pub struct Conn {
    stream: TcpStream,
    transaction: u16,
    unit: u8,
}

impl Conn {
    pub async fn connect(addr: SocketAddr, unit: u8) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            transaction: 0,
            unit,
        })
    }

    /// The next transaction id and the request ADU carrying `pdu` under it.
    pub fn request(&mut self, pdu: &[u8]) -> Result<(u16, Vec<u8>), Failure> {
        self.transaction = self.transaction.wrapping_add(1);
        Ok((self.transaction, adu(self.transaction, self.unit, pdu)?))
    }

    pub fn unit(&self) -> u8 {
        self.unit
    }

    /// The connection itself, for callers that keep several requests in
    /// flight (`load --pipeline`).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sends one request PDU and returns the response PDU.
    pub async fn transact(&mut self, pdu: &[u8]) -> Result<Vec<u8>, Failure> {
        let (transaction, adu) = self.request(pdu)?;
        self.stream.write_all(&adu).await?;
        let (tid, unit, body) = read_adu(&mut self.stream).await?;
        if tid != transaction || unit != self.unit {
            return Err(invalid("transaction or unit id differs from the request"));
        }
        Ok(body)
    }
}

/// A request ADU: MBAP header (transaction, protocol 0, length, unit) and PDU.
pub fn adu(transaction: u16, unit: u8, pdu: &[u8]) -> Result<Vec<u8>, Failure> {
    let len =
        u16::try_from(pdu.len() + 1).map_err(|_| Failure::Io("request too long".to_owned()))?;
    let mut adu = Vec::with_capacity(7 + pdu.len());
    adu.extend_from_slice(&transaction.to_be_bytes());
    adu.extend_from_slice(&[0, 0]);
    adu.extend_from_slice(&len.to_be_bytes());
    adu.push(unit);
    adu.extend_from_slice(pdu);
    Ok(adu)
}

/// Reads one response ADU: its transaction id, unit id and PDU. I/O errors
/// come back as they are, so that callers can tell a reset from a close.
pub async fn read_adu<R: AsyncReadExt + Unpin>(r: &mut R) -> io::Result<(u16, u8, Vec<u8>)> {
    let mut hdr = [0u8; 7];
    r.read_exact(&mut hdr).await?;
    let tid = u16::from_be_bytes([hdr[0], hdr[1]]);
    let proto = u16::from_be_bytes([hdr[2], hdr[3]]);
    let len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    if proto != 0 || !(2..=254).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "invalid response: bad MBAP header",
        ));
    }
    let mut body = vec![0u8; len - 1];
    r.read_exact(&mut body).await?;
    Ok((tid, hdr[6], body))
}

/// Connects (if `conn` is empty) and runs one request, all within `timeout`.
/// Leaves `conn` empty when the connection cannot be reused.
pub async fn exchange(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    unit: u8,
    pdu: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, Failure> {
    let attempt = async {
        if conn.is_none() {
            *conn = Some(Conn::connect(addr, unit).await?);
        }
        match conn.as_mut() {
            Some(c) => c.transact(pdu).await,
            None => Err(Failure::Io("not connected".to_owned())),
        }
    };
    let result = match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Timeout(
            u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        )),
    };
    if result.as_ref().is_err_and(Failure::breaks_connection) {
        *conn = None;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_requests() {
        assert_eq!(
            encode(&Request::ReadHolding { addr: 0x10, qty: 2 }),
            [3, 0, 0x10, 0, 2]
        );
        assert_eq!(
            encode(&Request::WriteCoil { addr: 1, on: true }),
            [5, 0, 1, 0xFF, 0]
        );
        assert_eq!(
            encode(&Request::WriteRegisters {
                addr: 40,
                values: vec![1, 0x0203]
            }),
            [16, 0, 40, 0, 2, 4, 0, 1, 2, 3]
        );
    }

    #[test]
    fn decodes_responses() {
        let rd = Request::ReadHolding { addr: 0, qty: 2 };
        assert_eq!(decode(&rd, &[3, 4, 0, 0, 0, 1]), Ok(vec![0, 1]));
        assert_eq!(decode(&rd, &[0x83, 2]), Err(Failure::Exception(2)));
        assert!(decode(&rd, &[3, 2, 0, 0]).is_err());
        assert!(decode(&rd, &[4, 4, 0, 0, 0, 1]).is_err());
        let coils = Request::ReadCoils { addr: 0, qty: 10 };
        assert_eq!(
            decode(&coils, &[1, 2, 0b101, 0b10]),
            Ok(vec![1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
        );
        let wr = Request::WriteRegister {
            addr: 40,
            value: 123,
        };
        assert_eq!(decode(&wr, &[6, 0, 40, 0, 123]), Ok(vec![123]));
        assert!(decode(&wr, &[6, 0, 40, 0, 124]).is_err());
    }

    #[test]
    fn failure_wording() {
        assert_eq!(
            Failure::Exception(1).to_string(),
            "modbus exception 1 (illegal function)"
        );
        assert_eq!(
            Failure::Timeout(1500).to_string(),
            "timed out after 1500 ms"
        );
        let reset = io::Error::from_raw_os_error(104);
        assert_eq!(io_message(&reset), "connection reset by peer");
        assert_eq!(
            io_message(&io::ErrorKind::UnexpectedEof.into()),
            "connection closed by peer"
        );
        assert!(
            Failure::Timeout(1).breaks_connection() && !Failure::Exception(2).breaks_connection()
        );
    }
}
