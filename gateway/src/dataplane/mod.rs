//! The kernel side of the gateway: the embedded XDP object, its maps, attach
//! and detach, BPF_PROG_TEST_RUN, events and counters.

mod batch;
mod counters;
mod events;
mod maps;
mod pins;

use std::time::Duration;

use aya::{
    Ebpf,
    programs::{
        ProgramError, TestRun, TestRunOptions, Xdp, XdpMode, links::FdLink, xdp::XdpLinkId,
    },
};
use bessai_common::{Action, Reason};
use bessai_policy::Compiled;
pub use counters::{ConduitTotals, Counters};
pub use events::{EventStream, addr, render_event};
pub use maps::{Switch, split_conduit_id};
pub use pins::{Adopted, PinPaths};

/// The XDP object built by build.rs, aligned for the ELF parser.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bessai-xdp"));

const PROGRAM: &str = "bessai_xdp";
/// Programs of the same object that the benchmark measures beside ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// Returns XDP_PASS: what BPF_PROG_TEST_RUN itself costs.
    Pass,
    /// Returns XDP_DROP: the floor for a flood.
    Drop,
    /// A stateless FC 3 check with direct packet access.
    ReferenceFilter,
}

impl Baseline {
    const fn program(self) -> &'static str {
        match self {
            Baseline::Pass => "xdp_pass_baseline",
            Baseline::Drop => "xdp_drop_baseline",
            Baseline::ReferenceFilter => "xdp_reference_filter",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP object has no program {PROGRAM}")]
    NoProgram,
    #[error("the XDP object has no map {0}")]
    NoMap(&'static str),
    #[error("verifying or attaching the XDP program: {0}")]
    Program(#[from] ProgramError),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("attaching to {iface}: neither native nor generic XDP: {source}")]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("batch update of map {map}: {source}")]
    Batch {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("counting CPUs: {0}")]
    Cpus(#[source] std::io::Error),
    #[error("bpffs pin {path}: {reason}")]
    Pin { path: String, reason: String },
    #[error("reading the random source for the stream key: {0}")]
    Random(#[source] std::io::Error),
    #[error("interface {0}: no such interface")]
    NoInterface(String),
}

/// How a program ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Generic,
    /// A link pinned by an earlier run now runs this program (replaced in
    /// one step: the interface was never without a program).
    Adopted,
}

impl AttachMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Adopted => "adopted",
        }
    }
}

/// An attachment to one interface.
enum Attachment {
    /// Owned by this process: detached when it exits.
    Owned(XdpLinkId),
    /// Pinned on bpffs: outlives this process, a crash included.
    Pinned(FdLink),
}

/// A loaded (verified) XDP program with its maps. Dropping it detaches the
/// links it owns; pinned links and maps stay in force.
pub struct Dataplane {
    ebpf: Ebpf,
    links: Vec<(String, Attachment)>,
    pins: Option<PinPaths>,
    /// The spare generation holds no entries (see maps.rs).
    spare_clean: bool,
    /// Interface index and zone name of each port (ingress binding).
    iface_zones: maps::IfaceZones,
}

/// One BPF_PROG_TEST_RUN result.
#[derive(Debug, Clone)]
pub struct TestRunOutcome {
    /// The XDP action code (XDP_DROP = 1, XDP_PASS = 2, XDP_TX = 3).
    pub xdp_action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Mean time per run reported by the kernel.
    pub per_run: Duration,
}

impl Dataplane {
    /// Loads the embedded object and runs the verifier.
    pub fn load() -> Result<Self, DataplaneError> {
        let mut ebpf = Ebpf::load(XDP_OBJECT)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(DataplaneError::NoProgram)?
            .try_into()?;
        prog.load()?;
        maps::ensure_stream_key(&mut ebpf)?;
        Ok(Self {
            ebpf,
            links: Vec::new(),
            pins: None,
            spare_clean: true,
            iface_zones: None,
        })
    }

    /// Loads the embedded object reusing the maps pinned under `pins` by an
    /// earlier run (policy, flows, counters, unread events), or pinning new
    /// ones; pins the program. Links are adopted by [`Dataplane::attach`].
    pub fn load_pinned(pins: PinPaths) -> Result<(Self, Adopted), DataplaneError> {
        let (mut ebpf, adopted) = pins::load(&pins)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(DataplaneError::NoProgram)?
            .try_into()?;
        prog.load()?;
        pins::pin_program(&pins, prog)?;
        maps::ensure_stream_key(&mut ebpf)?;
        Ok((
            Self {
                ebpf,
                links: Vec::new(),
                pins: Some(pins),
                // A crash during a reload can leave part of a policy there.
                spare_clean: false,
                iface_zones: None,
            },
            adopted,
        ))
    }

    /// Puts `compiled` in force in one step: written completely into the
    /// spare generation, then switched to; the old generation is removed
    /// afterwards.
    pub fn install(&mut self, compiled: &Compiled) -> Result<Switch, DataplaneError> {
        let sw = maps::switch(
            &mut self.ebpf,
            compiled,
            &self.iface_zones,
            self.spare_clean,
        );
        self.spare_clean = sw.is_ok();
        sw
    }

    /// Binds each port to its zone (interface name, zone name): conduit
    /// clients are then accepted only on their zone's ports, assets' answers
    /// only on theirs. Takes effect with the next [`Dataplane::install`];
    /// without it (development runs) every port serves every zone.
    pub fn bind_zones(&mut self, ports: &[(String, String)]) -> Result<(), DataplaneError> {
        let mut bound = Vec::new();
        for (iface, zone) in ports {
            let name = std::ffi::CString::new(iface.as_str())
                .map_err(|_| DataplaneError::NoInterface(iface.clone()))?;
            // SAFETY: a valid NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if ifindex == 0 {
                return Err(DataplaneError::NoInterface(iface.clone()));
            }
            bound.push((ifindex, zone.clone()));
        }
        self.iface_zones = Some(bound);
        Ok(())
    }

    /// The policy generation in force.
    pub fn active_generation(&self) -> Result<u8, DataplaneError> {
        maps::active(&self.ebpf)
    }

    /// Attaches to `iface`: natively where the driver supports XDP (and
    /// `allow_native`), else in generic (SKB) mode unless `allow_generic` is false.
    /// With pins, a link pinned for `iface` by an earlier run is adopted
    /// (its program replaced atomically) and a new link is pinned.
    pub fn attach(
        &mut self,
        iface: &str,
        allow_native: bool,
        allow_generic: bool,
    ) -> Result<AttachMode, DataplaneError> {
        if let Some(pins) = self.pins.clone() {
            let prog = self.program_mut()?;
            if let Some(link) = pins::adopt_link(&pins, iface, prog)? {
                self.links
                    .push((iface.to_string(), Attachment::Pinned(link)));
                return Ok(AttachMode::Adopted);
            }
        }
        let pins = self.pins.clone();
        let prog = self.program_mut()?;
        let native = if allow_native {
            Some(prog.attach(iface, XdpMode::Driver))
        } else {
            None
        };
        let (id, mode) = match native {
            Some(Ok(id)) => (id, AttachMode::Native),
            Some(Err(source)) if !allow_generic => {
                return Err(DataplaneError::Attach {
                    iface: iface.to_string(),
                    source,
                });
            }
            other => {
                if let Some(Err(e)) = other {
                    tracing::debug!(iface, error = %e, "native XDP unavailable, trying generic");
                }
                let id =
                    prog.attach(iface, XdpMode::Skb)
                        .map_err(|source| DataplaneError::Attach {
                            iface: iface.to_string(),
                            source,
                        })?;
                (id, AttachMode::Generic)
            }
        };
        let attachment = match pins {
            Some(pins) => Attachment::Pinned(pins::pin_link(&pins, iface, prog, id)?),
            None => Attachment::Owned(id),
        };
        self.links.push((iface.to_string(), attachment));
        Ok(mode)
    }

    /// Detaches from every interface, pinned links included (their pins are
    /// removed): the boundary is then open. Owned links are also detached on
    /// drop; pinned ones never are.
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        let links = std::mem::take(&mut self.links);
        for (iface, attachment) in links {
            match attachment {
                Attachment::Owned(id) => {
                    if let Err(e) = self.program_mut()?.detach(id) {
                        tracing::warn!(iface, error = %e, "detach failed");
                    }
                }
                Attachment::Pinned(link) => {
                    if let Some(pins) = &self.pins {
                        pins::unpin_link(pins, &iface)?;
                    }
                    // The last reference: the kernel detaches the program.
                    drop(link);
                }
            }
        }
        Ok(())
    }

    /// Removes every pin (maps, program, links) of this dataplane; what is
    /// still attached is detached when this process lets go of it.
    pub fn unpin_all(&mut self) -> Result<(), DataplaneError> {
        self.detach_all()?;
        match &self.pins {
            Some(pins) => pins::remove_all(pins),
            None => Ok(()),
        }
    }

    /// Runs the program once (or `repeat` times) on `frame` with
    /// BPF_PROG_TEST_RUN; the maps (policy and flow state) are the live ones.
    pub fn test_run(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, DataplaneError> {
        let mut out = vec![0u8; frame.len() + 256];
        let prog = self.program_mut()?;
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok(TestRunOutcome {
            xdp_action: r.return_value,
            frame: out,
            per_run: r.duration,
        })
    }

    /// Runs one of the benchmark's baseline programs of the same object.
    pub fn test_run_baseline(
        &mut self,
        baseline: Baseline,
        frame: &[u8],
        repeat: u32,
    ) -> Result<Duration, DataplaneError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(baseline.program())
            .ok_or(DataplaneError::NoProgram)?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()?;
        }
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        })?;
        Ok(r.duration)
    }

    /// The kernel's own accounting for the program: (total run time, runs).
    /// Counts only while BPF statistics are enabled (`aya::sys::enable_stats`).
    pub fn run_stats(&mut self) -> Result<(Duration, u64), DataplaneError> {
        let info = self.program_mut()?.info()?;
        Ok((info.run_time(), info.run_count()))
    }

    /// Instructions the verifier processed to accept the program (of its
    /// budget of 1,000,000).
    pub fn verified_instructions(&mut self) -> Result<Option<u32>, DataplaneError> {
        Ok(self.program_mut()?.info()?.verified_instruction_count())
    }

    /// Reason and action of the last frame the program judged.
    pub fn last_verdict(&self) -> Result<(Reason, Action), DataplaneError> {
        let v = maps::last_verdict(&self.ebpf)?;
        let reason = Reason::from_u8(v as u8).unwrap_or(Reason::Malformed);
        let action = Action::from_u8((v >> 8) as u8).unwrap_or(Action::Drop);
        Ok((reason, action))
    }

    /// The per-boot stream key (tests give the host decision the same one).
    pub fn stream_key(&self) -> Result<bessai_common::StreamKey, DataplaneError> {
        maps::stream_key(&self.ebpf)
    }

    /// A tracked connection's state, as the normalizer left it.
    pub fn flow(
        &self,
        key: &bessai_common::FlowKey,
    ) -> Result<Option<bessai_common::FlowState>, DataplaneError> {
        maps::flow(&self.ebpf, key)
    }

    /// A connection in its handshake.
    pub fn half_open(
        &self,
        key: &bessai_common::FlowKey,
    ) -> Result<Option<bessai_common::HalfOpen>, DataplaneError> {
        maps::half_open(&self.ebpf, key)
    }

    /// Forgets every tracked TCP connection.
    pub fn clear_flows(&mut self) -> Result<(), DataplaneError> {
        maps::clear_flows(&mut self.ebpf)
    }

    /// Counters of the policy in force (conduits by policy id).
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        counters::read(&self.ebpf, self.active_generation()?)
    }

    /// The normalizer's and the event path's counters alone (cheap: one map).
    pub fn stream_stats(&self) -> Result<counters::StreamStats, DataplaneError> {
        counters::read_stats(&self.ebpf)
    }

    /// Takes the event ring buffer (once).
    pub fn events(&mut self) -> Result<EventStream, DataplaneError> {
        EventStream::take(&mut self.ebpf)
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, DataplaneError> {
        Ok(self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or(DataplaneError::NoProgram)?
            .try_into()?)
    }
}
