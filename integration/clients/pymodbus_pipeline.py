#!/usr/bin/env python3
"""Pipelined Modbus/TCP load from pymodbus' own framer and PDU classes.

pymodbus' clients hold a lock around each transaction, so they never have more
than one request in flight; a SCADA master polling many points does. This
client builds every request and decodes every response with pymodbus
(FramerSocket, DecodePDU, its request classes) and keeps up to --pipeline
requests in flight on each connection, each written on its own (one segment
each with TCP_NODELAY), answers matched by transaction id.

    pymodbus_pipeline.py --connect IP:PORT --transactions N [--pipeline 4]
                         [--connections 1] [--unit 1] [--timeout-ms 5000] OP...

OPs, sent in turn: read-holding:ADDR:QTY  read-input:ADDR:QTY
write-register:ADDR:VALUE. Reads of registers nobody writes are checked
against the simulator's initial tables (register i holds i below 1000),
writes against their echo.

Prints one JSON line:
    {"client": "pymodbus", "transactions": N, "failures": 0, "resets": 0,
     "timeouts": 0, "mismatches": 0, "connections": 1, "seconds": 1.2}
transactions: completed with the right answer; failures: every other one (a
failed connection fails all requests in flight on it; the next request
opens a new connection); resets: connections ended by ECONNRESET or EPIPE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
import time

from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteSingleRegisterRequest,
)


def parse_op(text: str) -> tuple[str, int, int]:
    name, addr, arg = text.split(":")
    if name not in ("read-holding", "read-input", "write-register"):
        raise ValueError(f"unknown OP {text}")
    return name, int(addr), int(arg)


def request(op: tuple[str, int, int], unit: int, tid: int):
    name, addr, arg = op
    if name == "read-holding":
        return ReadHoldingRegistersRequest(address=addr, count=arg, dev_id=unit, transaction_id=tid)
    if name == "read-input":
        return ReadInputRegistersRequest(address=addr, count=arg, dev_id=unit, transaction_id=tid)
    return WriteSingleRegisterRequest(address=addr, registers=[arg], dev_id=unit, transaction_id=tid)


def right_answer(op: tuple[str, int, int], rsp) -> bool:
    name, addr, arg = op
    if rsp.isError():
        return False
    if name == "write-register":
        return rsp.function_code == 6 and rsp.address == addr and list(rsp.registers) == [arg]
    want_fc = 3 if name == "read-holding" else 4
    return rsp.function_code == want_fc and list(rsp.registers) == list(range(addr, addr + arg))


class Tally:
    def __init__(self, total: int):
        self.left = total
        self.sent = 0
        self.transactions = self.failures = self.resets = 0
        self.timeouts = self.mismatches = self.connections = 0

    def take(self) -> bool:
        if self.left == 0:
            return False
        self.left -= 1
        return True


async def connection(args, ops, tally: Tally) -> None:
    host, port = args.connect.rsplit(":", 1)
    timeout = args.timeout_ms / 1000
    while tally.left > 0:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
        except (OSError, asyncio.TimeoutError):
            # The transaction it was opened for fails.
            if tally.take():
                tally.failures += 1
            await asyncio.sleep(0.01)
            continue
        tally.connections += 1
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        framer = FramerSocket(DecodePDU(is_server=False))
        in_flight: dict[int, tuple[tuple, float]] = {}
        buf, tid, broken = b"", 0, False
        try:
            while True:
                while len(in_flight) < args.pipeline and tally.take():
                    tid = tid % 0xFFFF + 1
                    op = ops[tally.sent % len(ops)]
                    tally.sent += 1
                    writer.write(framer.buildFrame(request(op, args.unit, tid)))
                    in_flight[tid] = (op, time.monotonic())
                if not in_flight:
                    break
                await writer.drain()
                oldest = min(sent for _, sent in in_flight.values())
                left = oldest + timeout - time.monotonic()
                try:
                    data = await asyncio.wait_for(reader.read(4096), max(left, 0.001))
                except asyncio.TimeoutError:
                    tally.timeouts += len(in_flight)
                    broken = True
                    break
                if not data:
                    broken = True  # closed by the peer
                    break
                buf += data
                while True:
                    used, rsp = framer.processIncomingFrame(buf)
                    if not used:
                        break
                    buf = buf[used:]
                    if rsp is None:
                        continue
                    op_sent = in_flight.pop(rsp.transaction_id, None)
                    if op_sent is None:
                        tally.mismatches += 1
                        broken = True
                        break
                    if right_answer(op_sent[0], rsp):
                        tally.transactions += 1
                    else:
                        tally.mismatches += 1
                        tally.failures += 1
                if broken:
                    break
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            tally.resets += 1
            broken = True
        except OSError:
            broken = True
        tally.failures += len(in_flight)
        writer.close()
        if broken:
            await asyncio.sleep(0.01)


async def run(args) -> dict:
    ops = [parse_op(o) for o in args.ops]
    tally = Tally(args.transactions)
    start = time.monotonic()
    await asyncio.gather(*(connection(args, ops, tally) for _ in range(args.connections)))
    return {
        "client": "pymodbus",
        "transactions": tally.transactions,
        "failures": tally.failures,
        "resets": tally.resets,
        "timeouts": tally.timeouts,
        "mismatches": tally.mismatches,
        "connections": tally.connections,
        "seconds": round(time.monotonic() - start, 3),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", required=True)
    parser.add_argument("--transactions", type=int, required=True)
    parser.add_argument("--pipeline", type=int, default=4)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--unit", type=int, default=1)
    parser.add_argument("--timeout-ms", type=int, default=5000)
    parser.add_argument("ops", nargs="+")
    args = parser.parse_args(argv)
    # A failure is counted in the summary; pymodbus' own log lines only
    # clutter the test output.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL + 1)
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
