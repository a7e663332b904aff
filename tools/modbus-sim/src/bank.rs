//! The simulated inverter's data: four 65536-entry tables and the Modbus
//! semantics of each function code, without any networking.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio_modbus::{ExceptionCode, Request, Response};

const SIZE: usize = 65536;
/// Holding and input register `i` start with the value `i` below this.
const PATTERN_END: usize = 1000;

/// What a write changed, for the event line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub function: u8,
    pub address: u16,
    /// Values now stored (coils as 0/1).
    pub values: Vec<u16>,
}

/// What a request did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub response: Response,
    pub write: Option<Write>,
}

/// Registers and coils that differ from their initial value.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub writes: u64,
    pub holding: BTreeMap<u16, u16>,
    pub coils: BTreeMap<u16, u8>,
}

pub struct Bank {
    holding: Vec<u16>,
    input: Vec<u16>,
    coils: Vec<bool>,
    discrete: Vec<bool>,
    /// Kept up to date on every write, so a snapshot costs no table scan.
    changed: Snapshot,
}

impl Default for Bank {
    fn default() -> Self {
        Self {
            holding: (0..SIZE).map(initial_register).collect(),
            input: (0..SIZE).map(initial_register).collect(),
            coils: vec![false; SIZE],
            discrete: vec![false; SIZE],
            changed: Snapshot {
                writes: 0,
                holding: BTreeMap::new(),
                coils: BTreeMap::new(),
            },
        }
    }
}

fn initial_register(i: usize) -> u16 {
    if i < PATTERN_END {
        u16::try_from(i).unwrap_or(0)
    } else {
        0
    }
}

/// Checks a quantity against the function's limit (exception 03) and the
/// range against the table size (exception 02); returns the index range.
fn span(addr: u16, qty: usize, max: usize) -> Result<std::ops::Range<usize>, ExceptionCode> {
    if qty == 0 || qty > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let start = usize::from(addr);
    if start + qty > SIZE {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(start..start + qty)
}

fn read(outcome: Response) -> Result<Outcome, ExceptionCode> {
    Ok(Outcome {
        response: outcome,
        write: None,
    })
}

impl Bank {
    /// Applies one request (Modbus application protocol v1.1b3 limits).
    pub fn apply(&mut self, req: &Request<'_>) -> Result<Outcome, ExceptionCode> {
        let outcome = match req {
            Request::ReadCoils(a, q) => read(Response::ReadCoils(
                self.coils[span(*a, usize::from(*q), 2000)?].to_vec(),
            )),
            Request::ReadDiscreteInputs(a, q) => read(Response::ReadDiscreteInputs(
                self.discrete[span(*a, usize::from(*q), 2000)?].to_vec(),
            )),
            Request::ReadHoldingRegisters(a, q) => read(Response::ReadHoldingRegisters(
                self.holding[span(*a, usize::from(*q), 125)?].to_vec(),
            )),
            Request::ReadInputRegisters(a, q) => read(Response::ReadInputRegisters(
                self.input[span(*a, usize::from(*q), 125)?].to_vec(),
            )),
            Request::WriteSingleCoil(a, on) => {
                self.set_coils(*a, &[*on]);
                Ok(Outcome {
                    response: Response::WriteSingleCoil(*a, *on),
                    write: Some(Write {
                        function: 5,
                        address: *a,
                        values: vec![u16::from(*on)],
                    }),
                })
            }
            Request::WriteSingleRegister(a, v) => {
                self.set_holding(*a, &[*v]);
                Ok(Outcome {
                    response: Response::WriteSingleRegister(*a, *v),
                    write: Some(Write {
                        function: 6,
                        address: *a,
                        values: vec![*v],
                    }),
                })
            }
            Request::WriteMultipleCoils(a, bits) => {
                span(*a, bits.len(), 1968)?;
                self.set_coils(*a, bits);
                Ok(Outcome {
                    response: Response::WriteMultipleCoils(
                        *a,
                        u16::try_from(bits.len()).unwrap_or(0),
                    ),
                    write: Some(Write {
                        function: 15,
                        address: *a,
                        values: bits.iter().map(|b| u16::from(*b)).collect(),
                    }),
                })
            }
            Request::WriteMultipleRegisters(a, words) => {
                span(*a, words.len(), 123)?;
                self.set_holding(*a, words);
                Ok(Outcome {
                    response: Response::WriteMultipleRegisters(
                        *a,
                        u16::try_from(words.len()).unwrap_or(0),
                    ),
                    write: Some(Write {
                        function: 16,
                        address: *a,
                        values: words.to_vec(),
                    }),
                })
            }
            Request::MaskWriteRegister(a, and, or) => {
                let new = (self.holding[usize::from(*a)] & and) | (or & !and);
                self.set_holding(*a, &[new]);
                Ok(Outcome {
                    response: Response::MaskWriteRegister(*a, *and, *or),
                    write: Some(Write {
                        function: 22,
                        address: *a,
                        values: vec![new],
                    }),
                })
            }
            Request::ReadWriteMultipleRegisters(ra, rq, wa, words) => {
                let rrange = span(*ra, usize::from(*rq), 125)?;
                span(*wa, words.len(), 121)?;
                // The write happens before the read (6.17).
                self.set_holding(*wa, words);
                Ok(Outcome {
                    response: Response::ReadWriteMultipleRegisters(self.holding[rrange].to_vec()),
                    write: Some(Write {
                        function: 23,
                        address: *wa,
                        values: words.to_vec(),
                    }),
                })
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }?;
        if outcome.write.is_some() {
            self.changed.writes += 1;
        }
        Ok(outcome)
    }

    /// Stores `words` from `start` on; the caller has checked the range.
    fn set_holding(&mut self, start: u16, words: &[u16]) {
        for (addr, &v) in (start..=u16::MAX).zip(words) {
            let i = usize::from(addr);
            self.holding[i] = v;
            if v == initial_register(i) {
                self.changed.holding.remove(&addr);
            } else {
                self.changed.holding.insert(addr, v);
            }
        }
    }

    /// Stores `bits` from `start` on; the caller has checked the range.
    fn set_coils(&mut self, start: u16, bits: &[bool]) {
        for (addr, &on) in (start..=u16::MAX).zip(bits) {
            self.coils[usize::from(addr)] = on;
            if on {
                self.changed.coils.insert(addr, 1);
            } else {
                self.changed.coils.remove(&addr);
            }
        }
    }

    /// Registers and coils that differ from their initial value.
    pub fn snapshot(&self) -> &Snapshot {
        &self.changed
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn ok(bank: &mut Bank, req: Request<'_>) -> Response {
        bank.apply(&req).unwrap().response
    }

    #[test]
    fn initial_pattern() {
        let mut b = Bank::default();
        assert_eq!(
            ok(&mut b, Request::ReadHoldingRegisters(0, 2)),
            Response::ReadHoldingRegisters(vec![0, 1])
        );
        assert_eq!(
            ok(&mut b, Request::ReadInputRegisters(998, 3)),
            Response::ReadInputRegisters(vec![998, 999, 0])
        );
        assert_eq!(
            b.snapshot(),
            &Snapshot {
                writes: 0,
                holding: BTreeMap::new(),
                coils: BTreeMap::new()
            }
        );
    }

    #[test]
    fn writes_show_in_snapshot() {
        let mut b = Bank::default();
        let out = b.apply(&Request::WriteSingleRegister(40, 123)).unwrap();
        assert_eq!(
            out.write,
            Some(Write {
                function: 6,
                address: 40,
                values: vec![123]
            })
        );
        ok(&mut b, Request::WriteSingleRegister(41, 41)); // back to its initial value
        ok(
            &mut b,
            Request::WriteMultipleCoils(3, Cow::Owned(vec![true, false, true])),
        );
        ok(&mut b, Request::MaskWriteRegister(40, 0x00F0, 0x0005));
        let snap = b.snapshot();
        assert_eq!(snap.writes, 4);
        assert_eq!(snap.holding, BTreeMap::from([(40, 0x75)]));
        assert_eq!(snap.coils, BTreeMap::from([(3, 1), (5, 1)]));
        assert_eq!(
            serde_json::to_string(&snap).unwrap(),
            r#"{"writes":4,"holding":{"40":117},"coils":{"3":1,"5":1}}"#
        );
    }

    #[test]
    fn read_write_multiple_writes_first() {
        let mut b = Bank::default();
        let rsp = ok(
            &mut b,
            Request::ReadWriteMultipleRegisters(10, 2, 11, Cow::Owned(vec![7])),
        );
        assert_eq!(rsp, Response::ReadWriteMultipleRegisters(vec![10, 7]));
    }

    #[test]
    fn exceptions() {
        let mut b = Bank::default();
        let e = |b: &mut Bank, r: Request<'_>| b.apply(&r).unwrap_err();
        assert_eq!(
            e(&mut b, Request::ReadHoldingRegisters(0, 0)),
            ExceptionCode::IllegalDataValue
        );
        assert_eq!(
            e(&mut b, Request::ReadHoldingRegisters(0, 126)),
            ExceptionCode::IllegalDataValue
        );
        assert_eq!(
            e(&mut b, Request::ReadHoldingRegisters(65535, 2)),
            ExceptionCode::IllegalDataAddress
        );
        assert_eq!(
            e(&mut b, Request::ReadCoils(65000, 1000)),
            ExceptionCode::IllegalDataAddress
        );
        assert_eq!(
            e(&mut b, Request::ReportServerId),
            ExceptionCode::IllegalFunction
        );
        assert_eq!(
            e(&mut b, Request::Custom(0x41, Cow::Owned(vec![1]))),
            ExceptionCode::IllegalFunction
        );
        assert_eq!(b.snapshot().writes, 0);
        assert_eq!(
            ok(&mut b, Request::ReadHoldingRegisters(65535, 1)),
            Response::ReadHoldingRegisters(vec![0])
        );
    }
}
