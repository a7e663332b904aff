//! Why a packet got its verdict. One enum for kernel counters, events and
//! host reports; the numeric values are part of the event format.

/// What the data plane does with a frame.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Pass = 0,
    Drop = 1,
    /// Rewrite the denied client segment into a RST toward the server, pass it.
    ResetServer = 2,
    /// Rewrite the client's packet into a RST back to the client, transmit it.
    ResetClient = 3,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::ResetServer => "reset-server",
            Action::ResetClient => "reset-client",
        }
    }

    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Action::Pass,
            1 => Action::Drop,
            2 => Action::ResetServer,
            3 => Action::ResetClient,
            _ => return None,
        })
    }
}

pub const NUM_REASONS: usize = 48;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not conduit traffic (ARP, other ports, non-TCP): left to nftables.
    NotConduit = 0,
    /// Every ADU in the segment is allowed.
    Allowed = 1,
    /// Server to client on a conduit.
    Response = 2,
    /// TCP without payload on a conduit (handshake, ACK, FIN, RST).
    TcpControl = 3,
    /// Client bytes the server already acknowledged (keep-alive, old
    /// duplicate): the server discards them, so they pass unjudged.
    Duplicate = 4,
    /// A retransmission whose bytes equal those judged before (and nothing new).
    Retransmission = 5,

    /// To a conduit port from a host in no conduit (or from a conduit port to a
    /// host in none).
    NoConduit = 10,
    /// An IP fragment to a protected asset or conduit port: cannot be judged.
    IpFragment = 11,
    /// IPv6 extension headers in front of traffic to a protected asset.
    Ipv6Extension = 12,
    /// Headers inconsistent or cut short (IHL, total length, TCP data offset).
    Malformed = 13,
    /// The frame is longer than the inspection buffer.
    Oversize = 14,
    /// More than one VLAN tag.
    Encapsulation = 15,
    TcpUrgent = 16,
    /// Data on a connection whose handshake the gateway did not see.
    UnknownFlow = 17,
    /// Data overlapping bytes already judged (overlap evasion).
    TcpOverlap = 18,
    /// Data ahead of the next expected byte: dropped silently and counted,
    /// the client retransmits what is missing and then this.
    OutOfOrder = 19,
    /// Payload on a SYN (TCP Fast Open): not judged, so not passed.
    SynData = 20,
    MbapProtocol = 21,
    /// MBAP length outside 2..=254.
    MbapLength = 22,
    /// An ADU continues past the end of the segment.
    AduSplit = 23,
    TooManyAdus = 24,
    UnitDenied = 25,
    FunctionDenied = 26,
    AddressDenied = 27,
    /// Quantity zero, above the Modbus maximum, or past address 65535.
    QuantityInvalid = 28,
    /// FC 8 sub-function or FC 43 MEI type not named by the policy.
    SubfunctionDenied = 29,
    /// PDU length or byte count inconsistent with the function.
    PduMalformed = 30,
    /// A client packet on a connection already reset: answered with a RST, no new event.
    ResetRepeat = 31,
    /// A retransmission whose bytes differ from those already judged and not
    /// yet acknowledged (overlap evasion: a receiver may keep either copy).
    RetransmitMismatch = 32,
    /// A retransmission that does not start and end on judged segment
    /// boundaries, so its bytes cannot be compared: dropped silently, counted.
    Unverifiable = 33,
    /// New data while the connection already has the maximum of judged,
    /// unacknowledged segments: dropped silently, counted.
    WindowFull = 34,
    /// A conduit client's (or asset's) address on an interface outside its zone.
    Spoofed = 35,
    /// From a conduit port toward a client, but not on a tracked connection.
    NoFlow = 36,
    /// The per-boot stream key is not set: conduit data cannot be tracked safely.
    NoStreamKey = 37,
    /// Client data on a connection whose earlier segment was denied with
    /// `on_deny = "drop"`: dropped, reported once (the first denial).
    DeniedRepeat = 38,
}

impl Reason {
    /// A denial is reported (event, SIEM); silent drops are only counted.
    pub const fn is_denial(self) -> bool {
        (self as u8) >= 10 && !self.is_silent_drop()
    }

    /// Dropped without an event: the client's TCP recovers by retransmitting,
    /// and nothing was refused that the policy forbids.
    pub const fn is_silent_drop(self) -> bool {
        matches!(
            self,
            Reason::OutOfOrder | Reason::Unverifiable | Reason::WindowFull
        )
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NotConduit => "not-conduit",
            Reason::Allowed => "allowed",
            Reason::Response => "response",
            Reason::TcpControl => "tcp-control",
            Reason::Duplicate => "tcp-duplicate",
            Reason::Retransmission => "tcp-retransmission",
            Reason::NoConduit => "no-conduit",
            Reason::IpFragment => "ip-fragment",
            Reason::Ipv6Extension => "ipv6-extension-header",
            Reason::Malformed => "malformed-header",
            Reason::Oversize => "oversize-frame",
            Reason::Encapsulation => "unsupported-encapsulation",
            Reason::TcpUrgent => "tcp-urgent",
            Reason::UnknownFlow => "unknown-flow",
            Reason::TcpOverlap => "tcp-overlap",
            Reason::OutOfOrder => "tcp-out-of-order",
            Reason::SynData => "syn-with-data",
            Reason::MbapProtocol => "mbap-protocol-id",
            Reason::MbapLength => "mbap-length",
            Reason::AduSplit => "adu-split",
            Reason::TooManyAdus => "too-many-adus",
            Reason::UnitDenied => "unit-denied",
            Reason::FunctionDenied => "function-denied",
            Reason::AddressDenied => "address-denied",
            Reason::QuantityInvalid => "quantity-invalid",
            Reason::SubfunctionDenied => "subfunction-denied",
            Reason::PduMalformed => "pdu-malformed",
            Reason::ResetRepeat => "reset-repeat",
            Reason::RetransmitMismatch => "tcp-retransmit-mismatch",
            Reason::Unverifiable => "tcp-retransmit-unverifiable",
            Reason::WindowFull => "tcp-window-full",
            Reason::Spoofed => "spoofed-ingress",
            Reason::NoFlow => "no-flow",
            Reason::NoStreamKey => "no-stream-key",
            Reason::DeniedRepeat => "denied-repeat",
        }
    }

    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Reason::NotConduit,
            1 => Reason::Allowed,
            2 => Reason::Response,
            3 => Reason::TcpControl,
            4 => Reason::Duplicate,
            5 => Reason::Retransmission,
            10 => Reason::NoConduit,
            11 => Reason::IpFragment,
            12 => Reason::Ipv6Extension,
            13 => Reason::Malformed,
            14 => Reason::Oversize,
            15 => Reason::Encapsulation,
            16 => Reason::TcpUrgent,
            17 => Reason::UnknownFlow,
            18 => Reason::TcpOverlap,
            19 => Reason::OutOfOrder,
            20 => Reason::SynData,
            21 => Reason::MbapProtocol,
            22 => Reason::MbapLength,
            23 => Reason::AduSplit,
            24 => Reason::TooManyAdus,
            25 => Reason::UnitDenied,
            26 => Reason::FunctionDenied,
            27 => Reason::AddressDenied,
            28 => Reason::QuantityInvalid,
            29 => Reason::SubfunctionDenied,
            30 => Reason::PduMalformed,
            31 => Reason::ResetRepeat,
            32 => Reason::RetransmitMismatch,
            33 => Reason::Unverifiable,
            34 => Reason::WindowFull,
            35 => Reason::Spoofed,
            36 => Reason::NoFlow,
            37 => Reason::NoStreamKey,
            38 => Reason::DeniedRepeat,
            _ => return None,
        })
    }

    /// Every reason, for reports and counter names.
    pub const ALL: [Reason; 35] = [
        Reason::NotConduit,
        Reason::Allowed,
        Reason::Response,
        Reason::TcpControl,
        Reason::Duplicate,
        Reason::Retransmission,
        Reason::NoConduit,
        Reason::IpFragment,
        Reason::Ipv6Extension,
        Reason::Malformed,
        Reason::Oversize,
        Reason::Encapsulation,
        Reason::TcpUrgent,
        Reason::UnknownFlow,
        Reason::TcpOverlap,
        Reason::OutOfOrder,
        Reason::SynData,
        Reason::MbapProtocol,
        Reason::MbapLength,
        Reason::AduSplit,
        Reason::TooManyAdus,
        Reason::UnitDenied,
        Reason::FunctionDenied,
        Reason::AddressDenied,
        Reason::QuantityInvalid,
        Reason::SubfunctionDenied,
        Reason::PduMalformed,
        Reason::ResetRepeat,
        Reason::RetransmitMismatch,
        Reason::Unverifiable,
        Reason::WindowFull,
        Reason::Spoofed,
        Reason::NoFlow,
        Reason::NoStreamKey,
        Reason::DeniedRepeat,
    ];
}
const _: () = assert!((Reason::DeniedRepeat as usize) < NUM_REASONS);
