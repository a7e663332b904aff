#!/usr/bin/env python3
"""Second, independent Modbus/TCP client for the integration tests (pymodbus 3.x).

Same command line and the same JSON lines as `modbus-sim client`, so tests can
run either implementation:

    pymodbus_client.py --connect IP:PORT [--unit 1] [--timeout-ms 2000] OPS...

OPS: read-holding:ADDR:QTY  read-input:ADDR:QTY  read-coils:ADDR:QTY
     write-register:ADDR:VALUE  write-registers:ADDR:V1,V2,...  write-coil:ADDR:0|1
     sleep:MS  reconnect
Numbers are decimal or 0x-prefixed hexadecimal.

One line per OP on stdout:
    {"op":"read-holding:0:2","ok":true,"values":[0,1],"ms":0.41}
    {"op":"...","ok":false,"error":"connection reset by peer","kind":"io","ms":1.2}
kind is "io" (transport failure or nonsense answer), "timeout" or "exception"
(then also "code": the Modbus exception code). After an io or timeout failure
the next request opens a new connection first. Exit status 0, or 64 for bad
arguments.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import socket
import sys
import time

EX_USAGE = 64
EX_UNAVAILABLE = 69
MAX_WRITE_REGISTERS = 123

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class Failure(Exception):
    """A failed OP: kind is io, timeout or exception."""

    def __init__(self, kind: str, message: str, code: int | None = None, sent: bool = True):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        # False when pymodbus refused to build the request: nothing went on
        # the wire and the connection is still good.
        self.sent = sent


def exception_failure(code: int) -> Failure:
    name = EXCEPTION_NAMES.get(code, "unknown exception")
    return Failure("exception", f"modbus exception {code} ({name})", code)


def timeout_failure(timeout_ms: int) -> Failure:
    return Failure("timeout", f"timed out after {timeout_ms} ms")


def io_failure(exc: BaseException) -> Failure:
    """The same wording as modbus-sim: strerror(3) in lower case."""
    errno = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and errno:
        return Failure("io", os.strerror(errno).lower())
    text = str(exc)
    if "unexpectedly closed" in text:
        return Failure("io", "connection closed by peer")
    return Failure("io", text.lower() or type(exc).__name__.lower())


# ------------------------------------------------------------------ OP syntax


def number(text: str, what: str, limit: int) -> int:
    try:
        if text[:2] in ("0x", "0X"):
            value = int(text[2:], 16)
        elif text.isdigit():
            value = int(text, 10)
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"bad {what} {text!r}") from None
    if not 0 <= value <= limit or not text.isascii() or "_" in text:
        raise ValueError(f"bad {what} {text!r}")
    return value


def parse_op(text: str) -> tuple:
    """Returns (name, args...) or raises ValueError; same rules as modbus-sim."""
    parts = text.split(":")
    name, fields = parts[0], parts[1:]
    u16 = 0xFFFF
    if name == "reconnect" and not fields:
        return ("reconnect",)
    if name == "sleep" and len(fields) == 1:
        return ("sleep", number(fields[0], "milliseconds", 2**64 - 1))
    if len(fields) != 2:
        raise ValueError(f"{text}: unknown OP or wrong number of fields")
    addr_text, arg = fields
    if name in ("read-holding", "read-input", "read-coils"):
        return (name, number(addr_text, "address", u16), number(arg, "quantity", u16))
    if name == "write-register":
        return (name, number(addr_text, "address", u16), number(arg, "value", u16))
    if name == "write-registers":
        values = [number(v, "value", u16) for v in arg.split(",")]
        if len(values) > MAX_WRITE_REGISTERS:
            raise ValueError(f"{text}: at most {MAX_WRITE_REGISTERS} values per request")
        return (name, number(addr_text, "address", u16), values)
    if name == "write-coil":
        if arg not in ("0", "1"):
            raise ValueError(f"{text}: coil value must be 0 or 1, not {arg!r}")
        return (name, number(addr_text, "address", u16), arg == "1")
    raise ValueError(f"{text}: unknown OP or wrong number of fields")


def parse_endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"bad address {text!r}, want IP:PORT")
    socket.inet_pton(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, host.strip("[]"))
    return host.strip("[]"), number(port, "port", 0xFFFF)


# ------------------------------------------------------------------- client


def unit_keyword(client) -> str:
    """The unit id keyword of this pymodbus: device_id (3.10+), slave (3.x), unit (old)."""
    params = inspect.signature(client.read_holding_registers).parameters
    for keyword in ("device_id", "slave", "unit"):
        if keyword in params:
            return keyword
    raise RuntimeError("cannot find the unit id keyword of this pymodbus")


class Runner:
    def __init__(self, host: str, port: int, unit: int, timeout_ms: int):
        from pymodbus.client import ModbusTcpClient

        self.host, self.port, self.timeout_ms = host, port, timeout_ms
        self.client = ModbusTcpClient(host, port=port, timeout=timeout_ms / 1000, retries=0)
        self.unit = {unit_keyword(self.client): unit}

    def close(self) -> None:
        self.client.close()

    def _set_timeout(self, seconds: float) -> None:
        params = getattr(self.client, "comm_params", None)
        if params is not None and hasattr(params, "timeout_connect"):
            params.timeout_connect = max(seconds, 0.001)

    def ensure_connected(self, deadline: float) -> None:
        if getattr(self.client, "socket", None) is not None:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise timeout_failure(self.timeout_ms)
        if hasattr(self.client, "socket"):
            # Connect ourselves so that a refused or unreachable peer is reported
            # with its errno (pymodbus' connect() only logs it).
            try:
                sock = socket.create_connection((self.host, self.port), timeout=remaining)
            except socket.timeout:
                raise timeout_failure(self.timeout_ms) from None
            except OSError as exc:
                raise io_failure(exc) from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.client.socket = sock
        else:
            self._set_timeout(remaining)
            if not self.client.connect():
                raise Failure("io", "connect failed")

    def request(self, op: tuple, deadline: float) -> list[int]:
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        self.ensure_connected(deadline)
        self._set_timeout(deadline - time.monotonic())
        name, addr, arg = op
        c, unit = self.client, self.unit
        try:
            if name == "read-holding":
                rsp = c.read_holding_registers(addr, count=arg, **unit)
            elif name == "read-input":
                rsp = c.read_input_registers(addr, count=arg, **unit)
            elif name == "read-coils":
                rsp = c.read_coils(addr, count=arg, **unit)
            elif name == "write-register":
                rsp = c.write_register(addr, arg, **unit)
            elif name == "write-registers":
                rsp = c.write_registers(addr, arg, **unit)
            else:
                rsp = c.write_coil(addr, arg, **unit)
        except (socket.timeout, TimeoutError):
            raise timeout_failure(self.timeout_ms) from None
        except (ValueError, TypeError) as exc:
            # pymodbus checks quantities itself (1..125 registers, ...).
            raise Failure("io", f"not sent, pymodbus refused the request: {exc}", sent=False) from None
        except ModbusIOException as exc:
            if "No response received" in str(exc):
                raise timeout_failure(self.timeout_ms) from None
            raise Failure("io", f"invalid response: {exc}") from None
        except ConnectionException as exc:
            raise io_failure(exc) from None
        except OSError as exc:
            raise io_failure(exc) from None
        if rsp.isError():
            code = getattr(rsp, "exception_code", None)
            if isinstance(code, int):
                raise exception_failure(code)
            raise Failure("io", f"invalid response: {rsp}")
        if name in ("read-holding", "read-input"):
            values = list(rsp.registers)
            if len(values) != arg:
                raise Failure("io", f"invalid response: expected {arg} registers")
            return values
        if name == "read-coils":
            bits = list(rsp.bits)
            if len(bits) < arg:
                raise Failure("io", f"invalid response: expected {arg} coils")
            return [int(b) for b in bits[:arg]]
        if name == "write-registers":
            return list(arg)
        return [int(arg)]

    def run_op(self, text: str, op: tuple) -> dict:
        start = time.monotonic()
        deadline = start + self.timeout_ms / 1000
        values = None
        failure = None
        try:
            if op[0] == "sleep":
                time.sleep(op[1] / 1000)
            elif op[0] == "reconnect":
                self.close()
                self.ensure_connected(deadline)
            else:
                values = self.request(op, deadline)
        except Failure as f:
            failure = f
        except Exception as exc:  # noqa: BLE001 - every failure becomes a line
            failure = io_failure(exc)
        if failure is not None and failure.kind != "exception" and failure.sent:
            self.close()  # the next request reconnects
        line: dict = {"op": text, "ok": failure is None}
        if failure is None:
            if values is not None:
                line["values"] = values
        else:
            line["error"] = failure.message
            line["kind"] = failure.kind
            if failure.code is not None:
                line["code"] = failure.code
        line["ms"] = round((time.monotonic() - start) * 1000, 3)
        return line


class UsageParser(argparse.ArgumentParser):
    def error(self, message: str):  # exit 64 like modbus-sim
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EX_USAGE)


def main(argv: list[str]) -> int:
    parser = UsageParser(prog="pymodbus_client.py", description=__doc__.splitlines()[0])
    parser.add_argument("--connect", required=True, help="server IP:PORT")
    parser.add_argument("--unit", type=int, default=1, help="unit id (default 1)")
    parser.add_argument("--timeout-ms", type=int, default=2000, help="time limit per OP (default 2000)")
    parser.add_argument("--verbose", action="store_true", help="let pymodbus log to stderr")
    parser.add_argument("ops", nargs="+", metavar="OP")
    args = parser.parse_args(argv)
    try:
        host, port = parse_endpoint(args.connect)
        if not 0 <= args.unit <= 255:
            raise ValueError(f"bad unit {args.unit}")
        if args.timeout_ms < 1:
            raise ValueError(f"bad timeout {args.timeout_ms}")
        ops = [(text, parse_op(text)) for text in args.ops]
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    if not args.verbose:
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL + 1)
    try:
        runner = Runner(host, port, args.unit, args.timeout_ms)
    except ImportError as exc:
        print(f"pymodbus_client.py: {exc} (python3 -m pip install 'pymodbus==3.8.6')", file=sys.stderr)
        return EX_UNAVAILABLE
    try:
        for text, op in ops:
            print(json.dumps(runner.run_op(text, op), separators=(",", ":")), flush=True)
    finally:
        runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
