//! `modbus-sim server`: the inverter simulator on tokio-modbus' TCP server.
//! Every write becomes a JSON line on stdout and, with `--state-file`, an
//! atomic dump of the changed state.

use std::{
    future,
    io::{self, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_modbus::{
    ExceptionCode, Request, Response, SlaveRequest,
    server::{
        Service,
        tcp::{Server, accept_tcp_connection},
    },
};

use crate::{bank::Bank, cli::ServerArgs};

struct Shared {
    bank: Mutex<Bank>,
    state_file: Option<PathBuf>,
    log_reads: bool,
}

/// The service of one connection.
struct Inverter {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Event<'a> {
    Listening {
        addr: SocketAddr,
        unit: u8,
    },
    Connect {
        peer: SocketAddr,
    },
    Write {
        function: u8,
        address: u16,
        values: &'a [u16],
        peer: SocketAddr,
        unit: u8,
    },
    Read {
        function: u8,
        address: u16,
        quantity: u16,
        peer: SocketAddr,
        unit: u8,
    },
}

/// Prints one JSON line to stdout and flushes it. Output errors (a closed
/// pipe) must not take the server down.
fn emit(event: &Event<'_>) {
    if let Ok(line) = serde_json::to_string(event) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }
}

/// Writes `value` as JSON to `path` through a temporary file and a rename.
fn dump(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    serde_json::to_writer(&mut f, value)?;
    f.write_all(b"\n")?;
    drop(f);
    std::fs::rename(&tmp, path)
}

impl Inverter {
    fn handle(&self, req: SlaveRequest<'static>) -> Result<Response, ExceptionCode> {
        // A poisoned lock only means another connection's task panicked
        // mid-request; the tables are still usable.
        let mut bank = self.shared.bank.lock().unwrap_or_else(|e| e.into_inner());
        if self.shared.log_reads {
            self.log_read(&req);
        }
        let outcome = bank.apply(&req.request)?;
        if let Some(w) = &outcome.write {
            // Under the lock, so the event lines and dumps are in write order.
            emit(&Event::Write {
                function: w.function,
                address: w.address,
                values: &w.values,
                peer: self.peer,
                unit: req.slave,
            });
            if let Some(path) = &self.shared.state_file
                && let Err(e) = dump(path, &bank.snapshot())
            {
                eprintln!("modbus-sim: writing {}: {e}", path.display());
            }
        }
        Ok(outcome.response)
    }

    fn log_read(&self, req: &SlaveRequest<'_>) {
        let (function, address, quantity) = match req.request {
            Request::ReadCoils(a, q) => (1, a, q),
            Request::ReadDiscreteInputs(a, q) => (2, a, q),
            Request::ReadHoldingRegisters(a, q) => (3, a, q),
            Request::ReadInputRegisters(a, q) => (4, a, q),
            Request::ReadWriteMultipleRegisters(a, q, _, _) => (23, a, q),
            _ => return,
        };
        emit(&Event::Read {
            function,
            address,
            quantity,
            peer: self.peer,
            unit: req.slave,
        });
    }
}

impl Service for Inverter {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        future::ready(self.handle(req))
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        bank: Mutex::new(Bank::default()),
        state_file: args.state_file.clone(),
        log_reads: args.log_reads,
    });
    if let Some(path) = &args.state_file {
        // Start from a clean file so a stale one from an earlier run never counts.
        dump(path, &Bank::default().snapshot())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    emit(&Event::Listening {
        addr: listener.local_addr()?,
        unit: args.unit,
    });
    let server = Server::new(listener);

    let new_service = |peer: SocketAddr| -> io::Result<Option<Inverter>> {
        Ok(Some(Inverter {
            shared: Arc::clone(&shared),
            peer,
        }))
    };
    let on_connected = |stream: tokio::net::TcpStream, peer: SocketAddr| {
        let accepted = stream.set_nodelay(true).map(|()| {
            emit(&Event::Connect { peer });
            accept_tcp_connection(stream, peer, new_service)
        });
        // A connection that is already gone must not stop the accept loop.
        future::ready(Ok(accepted.and_then(|a| a).ok().flatten()))
    };
    // Resets and garbage end only their own connection's task.
    let on_process_error = |e: io::Error| eprintln!("modbus-sim: connection ended: {e}");
    loop {
        // `serve` only returns on an accept error (e.g. out of descriptors);
        // serving again keeps the simulator up.
        if let Err(e) = server.serve(&on_connected, on_process_error).await {
            eprintln!("modbus-sim: accept: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
