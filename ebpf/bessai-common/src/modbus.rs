//! Modbus/TCP request ADUs: MBAP framing and the per-function structure and
//! policy checks. Limits are those of the Modbus Application Protocol
//! Specification V1.1b3 (quantities per function, byte counts).

use crate::{
    decide::Policy,
    frame::Frame,
    reason::Reason,
    types::{Conduit, PART_MAIN, PART_WRITE, RuleKey},
};

/// MBAP header (7 bytes: transaction, protocol, length, unit id); the function code follows it.
pub const MBAP_LEN: usize = 7;
/// MBAP length counts the unit id and the PDU: 1 + at most 253.
pub const MBAP_LENGTH_MIN: u16 = 2;
pub const MBAP_LENGTH_MAX: u16 = 254;

pub const FC_READ_COILS: u8 = 1;
pub const FC_READ_DISCRETE_INPUTS: u8 = 2;
pub const FC_READ_HOLDING_REGISTERS: u8 = 3;
pub const FC_READ_INPUT_REGISTERS: u8 = 4;
pub const FC_WRITE_SINGLE_COIL: u8 = 5;
pub const FC_WRITE_SINGLE_REGISTER: u8 = 6;
pub const FC_READ_EXCEPTION_STATUS: u8 = 7;
pub const FC_DIAGNOSTICS: u8 = 8;
pub const FC_GET_COMM_EVENT_COUNTER: u8 = 11;
pub const FC_GET_COMM_EVENT_LOG: u8 = 12;
pub const FC_WRITE_MULTIPLE_COILS: u8 = 15;
pub const FC_WRITE_MULTIPLE_REGISTERS: u8 = 16;
pub const FC_REPORT_SERVER_ID: u8 = 17;
pub const FC_READ_FILE_RECORD: u8 = 20;
pub const FC_WRITE_FILE_RECORD: u8 = 21;
pub const FC_MASK_WRITE_REGISTER: u8 = 22;
pub const FC_READ_WRITE_MULTIPLE_REGISTERS: u8 = 23;
pub const FC_READ_FIFO_QUEUE: u8 = 24;
pub const FC_ENCAPSULATED_INTERFACE: u8 = 43;

/// Whether a function's rule lists address ranges, sub-function/MEI ranges,
/// or nothing (the function is allowed as a whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleShape {
    Addresses,
    /// FC 23: a read and a write address list.
    ReadWrite,
    /// FC 8 sub-functions.
    SubFunctions,
    /// FC 43 MEI types.
    MeiTypes,
    Whole,
}

pub const fn rule_shape(function: u8) -> RuleShape {
    match function {
        FC_READ_COILS
        | FC_READ_DISCRETE_INPUTS
        | FC_READ_HOLDING_REGISTERS
        | FC_READ_INPUT_REGISTERS
        | FC_WRITE_SINGLE_COIL
        | FC_WRITE_SINGLE_REGISTER
        | FC_WRITE_MULTIPLE_COILS
        | FC_WRITE_MULTIPLE_REGISTERS
        | FC_MASK_WRITE_REGISTER
        | FC_READ_FIFO_QUEUE => RuleShape::Addresses,
        FC_READ_WRITE_MULTIPLE_REGISTERS => RuleShape::ReadWrite,
        FC_DIAGNOSTICS => RuleShape::SubFunctions,
        FC_ENCAPSULATED_INTERFACE => RuleShape::MeiTypes,
        _ => RuleShape::Whole,
    }
}

/// Functions that change state in the server.
pub const fn is_write(function: u8) -> bool {
    matches!(
        function,
        FC_WRITE_SINGLE_COIL
            | FC_WRITE_SINGLE_REGISTER
            | FC_WRITE_MULTIPLE_COILS
            | FC_WRITE_MULTIPLE_REGISTERS
            | FC_MASK_WRITE_REGISTER
            | FC_READ_WRITE_MULTIPLE_REGISTERS
            | FC_WRITE_FILE_RECORD
    )
}

/// What one request ADU asks for (for events and reports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AduInfo {
    pub transaction: u16,
    pub unit: u8,
    pub function: u8,
    /// Start address (or FC 8 sub-function, FC 43 MEI type).
    pub address: u16,
    pub quantity: u16,
    /// FC 23: the write half, reported when the write is what was denied.
    pub write_address: u16,
    pub write_quantity: u16,
    /// FC 23: the write half was denied (the read half was allowed).
    pub write_denied: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AduVerdict {
    /// Bytes this ADU occupies in the segment; 0 when framing is broken and
    /// nothing after it can be judged.
    pub len: usize,
    pub reason: Reason,
    pub info: AduInfo,
}

/// The parts of a request PDU the policy is checked against.
#[derive(Clone, Copy)]
struct Request {
    /// Main address (or sub-function / MEI type) and quantity.
    address: u16,
    quantity: u16,
    /// FC 23 only.
    write_address: u16,
    write_quantity: u16,
}

impl Request {
    const fn single(address: u16, quantity: u16) -> Self {
        Self {
            address,
            quantity,
            write_address: 0,
            write_quantity: 0,
        }
    }
}

/// Judges the request ADU that starts at `off`, with `remaining` bytes of the
/// segment from there on.
#[inline(always)]
pub fn judge_adu<T: Policy + ?Sized>(
    f: &Frame,
    off: usize,
    remaining: usize,
    conduit: &Conduit,
    tables: &T,
) -> AduVerdict {
    let broken = |reason| AduVerdict {
        len: 0,
        reason,
        info: AduInfo::default(),
    };
    if remaining < MBAP_LEN + 1 {
        return broken(Reason::AduSplit);
    }
    let (Some(transaction), Some(protocol), Some(length), Some(unit), Some(function)) = (
        f.be16(off),
        f.be16(off + 2),
        f.be16(off + 4),
        f.u8(off + 6),
        f.u8(off + 7),
    ) else {
        return broken(Reason::AduSplit);
    };
    if protocol != 0 {
        return broken(Reason::MbapProtocol);
    }
    if !(MBAP_LENGTH_MIN..=MBAP_LENGTH_MAX).contains(&length) {
        return broken(Reason::MbapLength);
    }
    let adu_len = 6 + length as usize;
    if adu_len > remaining {
        return broken(Reason::AduSplit);
    }
    let mut info = AduInfo {
        transaction,
        unit,
        function,
        ..AduInfo::default()
    };
    // PDU = function code and data; `length` counts the unit id too. The
    // per-function checks below test the PDU length against constants; they
    // get it from a second load of the MBAP length, so that `adu_len` (which
    // the caller adds to its offset) leaves every branch with the same range
    // and the verifier can prune the ADU loop instead of multiplying its states.
    let pdu = off + MBAP_LEN;
    let Some(length_again) = f.be16_reread(off + 4) else {
        return broken(Reason::AduSplit);
    };
    let pdu_len = (length_again as usize).saturating_sub(1);
    let reason = match parse_request(f, pdu, pdu_len, function) {
        Err(reason) => reason,
        Ok(req) => {
            info.address = req.address;
            info.quantity = req.quantity;
            info.write_address = req.write_address;
            info.write_quantity = req.write_quantity;
            let (reason, write_denied) = check_policy(&req, unit, function, conduit, tables);
            info.write_denied = write_denied;
            reason
        }
    };
    AduVerdict {
        len: adu_len,
        reason,
        info,
    }
}

/// Structure checks that hold whatever the policy says.
#[inline(always)]
fn parse_request(f: &Frame, pdu: usize, pdu_len: usize, function: u8) -> Result<Request, Reason> {
    let u16_at = |o: usize| f.be16(pdu + o).ok_or(Reason::PduMalformed);
    let u8_at = |o: usize| f.u8(pdu + o).ok_or(Reason::PduMalformed);
    let exact = |n: usize| {
        if pdu_len == n {
            Ok(())
        } else {
            Err(Reason::PduMalformed)
        }
    };
    let quantity = |q: u16, max: u16| {
        if q == 0 || q > max {
            Err(Reason::QuantityInvalid)
        } else {
            Ok(q)
        }
    };
    if function & 0x80 != 0 || function == 0 {
        // Exception codes are responses; 0 is not a function.
        return Err(Reason::FunctionDenied);
    }
    match function {
        FC_READ_COILS | FC_READ_DISCRETE_INPUTS => {
            exact(5)?;
            Ok(Request::single(u16_at(1)?, quantity(u16_at(3)?, 2000)?))
        }
        FC_READ_HOLDING_REGISTERS | FC_READ_INPUT_REGISTERS => {
            exact(5)?;
            Ok(Request::single(u16_at(1)?, quantity(u16_at(3)?, 125)?))
        }
        FC_WRITE_SINGLE_COIL => {
            exact(5)?;
            let value = u16_at(3)?;
            if value != 0xFF00 && value != 0x0000 {
                return Err(Reason::PduMalformed);
            }
            Ok(Request::single(u16_at(1)?, 1))
        }
        FC_WRITE_SINGLE_REGISTER => {
            exact(5)?;
            Ok(Request::single(u16_at(1)?, 1))
        }
        FC_WRITE_MULTIPLE_COILS => {
            let q = quantity(u16_at(3)?, 1968)?;
            let byte_count = u8_at(5)? as usize;
            if byte_count != (q as usize).div_ceil(8) {
                return Err(Reason::PduMalformed);
            }
            exact(6 + byte_count)?;
            Ok(Request::single(u16_at(1)?, q))
        }
        FC_WRITE_MULTIPLE_REGISTERS => {
            let q = quantity(u16_at(3)?, 123)?;
            let byte_count = u8_at(5)? as usize;
            if byte_count != 2 * q as usize {
                return Err(Reason::PduMalformed);
            }
            exact(6 + byte_count)?;
            Ok(Request::single(u16_at(1)?, q))
        }
        FC_MASK_WRITE_REGISTER => {
            exact(7)?;
            Ok(Request::single(u16_at(1)?, 1))
        }
        FC_READ_WRITE_MULTIPLE_REGISTERS => {
            let rq = quantity(u16_at(3)?, 125)?;
            let wq = quantity(u16_at(7)?, 121)?;
            let byte_count = u8_at(9)? as usize;
            if byte_count != 2 * wq as usize {
                return Err(Reason::PduMalformed);
            }
            exact(10 + byte_count)?;
            Ok(Request {
                address: u16_at(1)?,
                quantity: rq,
                write_address: u16_at(5)?,
                write_quantity: wq,
            })
        }
        FC_READ_FIFO_QUEUE => {
            // No quantity on the wire; the range check treats it as one address.
            exact(3)?;
            Ok(Request::single(u16_at(1)?, 0))
        }
        FC_DIAGNOSTICS => {
            if pdu_len < 3 {
                return Err(Reason::PduMalformed);
            }
            Ok(Request::single(u16_at(1)?, 0))
        }
        FC_ENCAPSULATED_INTERFACE => {
            let mei = u8_at(1)?;
            // MEI 14 (read device identification): read code and object id.
            if mei == 14 {
                exact(4)?;
            } else if pdu_len < 2 {
                return Err(Reason::PduMalformed);
            }
            Ok(Request::single(mei as u16, 0))
        }
        FC_READ_EXCEPTION_STATUS
        | FC_GET_COMM_EVENT_COUNTER
        | FC_GET_COMM_EVENT_LOG
        | FC_REPORT_SERVER_ID => {
            exact(1)?;
            Ok(Request::single(0, 0))
        }
        FC_READ_FILE_RECORD | FC_WRITE_FILE_RECORD => {
            let byte_count = u8_at(1)? as usize;
            exact(2 + byte_count)?;
            Ok(Request::single(0, 0))
        }
        // User-defined and other public codes: no structure known; the policy
        // decides whether the function is allowed at all.
        _ => Ok(Request::single(0, 0)),
    }
}

/// The verdict, and whether it was FC 23's write half that was denied.
#[inline(always)]
fn check_policy<T: Policy + ?Sized>(
    req: &Request,
    unit: u8,
    function: u8,
    conduit: &Conduit,
    tables: &T,
) -> (Reason, bool) {
    if rule_shape(function) == RuleShape::ReadWrite {
        let read = check_main(req, unit, function, conduit, tables);
        if read != Reason::Allowed {
            return (read, false);
        }
        let write = match tables.rule(&RuleKey {
            conduit: conduit.id,
            function,
            part: PART_WRITE,
        }) {
            Some(write_rule) => check_range(write_rule, req.write_address, req.write_quantity),
            None => Reason::AddressDenied,
        };
        return (write, write != Reason::Allowed);
    }
    (check_main(req, unit, function, conduit, tables), false)
}

/// Unit, function and the main address range (FC 23: its read half).
#[inline(always)]
fn check_main<T: Policy + ?Sized>(
    req: &Request,
    unit: u8,
    function: u8,
    conduit: &Conduit,
    tables: &T,
) -> Reason {
    if !conduit.allows_unit(unit) {
        return Reason::UnitDenied;
    }
    let Some(rule) = tables.rule(&RuleKey {
        conduit: conduit.id,
        function,
        part: PART_MAIN,
    }) else {
        return Reason::FunctionDenied;
    };
    match rule_shape(function) {
        RuleShape::Whole => Reason::Allowed,
        RuleShape::SubFunctions | RuleShape::MeiTypes => {
            if rule.covers(req.address, req.address) {
                Reason::Allowed
            } else {
                Reason::SubfunctionDenied
            }
        }
        RuleShape::Addresses | RuleShape::ReadWrite => check_range(rule, req.address, req.quantity),
    }
}

#[inline(always)]
fn check_range(rule: &crate::types::Rule, address: u16, quantity: u16) -> Reason {
    // FC 24 carries no quantity: its pointer address alone must be allowed.
    let last = address as u32 + quantity.max(1) as u32 - 1;
    if last > u16::MAX as u32 {
        return Reason::QuantityInvalid;
    }
    if rule.covers(address, last as u16) {
        Reason::Allowed
    } else {
        Reason::AddressDenied
    }
}
