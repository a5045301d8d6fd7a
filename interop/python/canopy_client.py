#!/usr/bin/env python3
"""A small Canopy client written from docs/PROTOCOL.md and docs/vectors alone,
on stock aioquic: an example for implementers and the project's
interoperability test (tests/tests/interop_python.rs runs it against real
`canopy run` processes).

    canopy_client.py id [--key FILE]
    canopy_client.py fetch HASH PEERID@HOST:PORT -o FILE [--key FILE]
    canopy_client.py search WORDS... PEERID@HOST:PORT [--json] [--max-hits N]
    canopy_client.py selftest [--vectors DIR]

It only dials (it never listens), so it is a "node that accepts no
connections" (PROTOCOL section 8): it closes each connection as soon as it is
done with it and never claims to accept any. Exit status: 0 on success, 1 when
a search found nothing, 2 on any failure.

Sections cited as "§n" are those of docs/PROTOCOL.md.
"""

import argparse
import asyncio
import base64
import datetime
import ipaddress
import json
import os
import ssl
import struct
import sys

from blake3_tree import blake3, chunk_cv, merge, subtree_cv

ALPN = "canopy/0"  # §2
SERVER_NAME = "canopy"  # §3.2 item 7: what a stack that insists on a name sends
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")  # §3.2 item 3
MAX_FRAME = 65536  # §5.1
MAX_BLOCKS_PER_REQUEST = 1024  # §6.1
MIN_BLOCK_SIZE = 65536  # §7.2
MAX_BLOCKS = 16384
CV_LEN = 32
KEEP_ALIVE = 1.0  # §2: an ack-eliciting frame at least every 2.5 s; we PING every 1 s
CONNECT_TIMEOUT = 10.0  # §8 step 1 (reference: 10 s)
REQUEST_TIMEOUT = 30.0  # our own patience per request
SEARCH_TIMEOUT = 15.0  # §10 (reference client: 10 s per supernode; a little more here)

FILE_KINDS = ["audio", "video", "image", "document", "archive", "software", "other"]


class ProtocolError(Exception):
    """The peer said something §4-§8 do not allow."""


# ---------------------------------------------------------------- ids (§3.1)

def peer_id_text(key: bytes) -> str:
    assert len(key) == 32
    return base64.b32encode(key).decode().rstrip("=").lower()


def parse_peer_id(text: str) -> bytes:
    if len(text) != 52:
        raise ValueError(f"a peer id is 52 base32 characters, not {len(text)}: {text!r}")
    upper = text.upper()
    if any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for c in upper):
        raise ValueError(f"not base32: {text!r}")
    raw = base64.b32decode(upper + "====")
    if peer_id_text(raw) != text.lower():  # the 4 padding bits must be zero
        raise ValueError(f"non-zero padding bits in {text!r}")
    return raw


def parse_peer_addr(text: str):
    """PEERID@IP:PORT or PEERID@[IPv6]:PORT -> (id bytes, host, port)."""
    peer, sep, rest = text.partition("@")
    if not sep:
        raise ValueError(f"expected PEERID@HOST:PORT, got {text!r}")
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad IPv6 address in {text!r}")
        ipaddress.IPv6Address(host)
    else:
        host, sep, port = rest.rpartition(":")
        if not sep:
            raise ValueError(f"no port in {text!r}")
        ipaddress.IPv4Address(host)
    return parse_peer_id(peer), host, int(port)


def addr_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------- postcard (§4)

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        if n < 0x80:
            out.append(n)
            return bytes(out)
        out.append((n & 0x7F) | 0x80)
        n >>= 7


class Reader:
    """Strict postcard decoding: shortest varints within their type's width
    (§4), bools and Option tags 0 or 1, valid UTF-8 and no trailing bytes;
    so whatever decodes is canonical (§5.1) without re-encoding it."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("truncated body")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self, bits: int) -> int:
        width = (bits + 6) // 7
        value = 0
        for i in range(width):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                if i > 0 and byte == 0:
                    raise ProtocolError("over-long varint")
                if value >> bits:
                    raise ProtocolError("varint overflow")
                return value
        raise ProtocolError("varint too wide")

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return self.varint(16)

    def u32(self):
        return self.varint(32)

    def u64(self):
        return self.varint(64)

    def length(self):
        n = self.varint(64)  # usize; no valid frame holds a count over 65,536
        if n > MAX_FRAME:
            raise ProtocolError("length over the frame cap")
        return n

    def bool(self):
        b = self.u8()
        if b > 1:
            raise ProtocolError("bad bool")
        return b == 1

    def option(self, inner):
        tag = self.u8()
        if tag > 1:
            raise ProtocolError("bad Option tag")
        return inner() if tag else None

    def string(self):
        try:
            return self.take(self.length()).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("bad UTF-8") from None

    def vec(self, inner):
        return [inner() for _ in range(self.length())]

    def socket_addr(self):
        tag = self.u32()
        if tag == 0:
            host = str(ipaddress.IPv4Address(self.take(4)))
        elif tag == 1:
            host = str(ipaddress.IPv6Address(self.take(16)))
        else:
            raise ProtocolError("bad SocketAddr variant")
        return host, self.u16()

    def peer_addr(self):
        peer = self.take(32)
        host, port = self.socket_addr()
        return f"{peer_id_text(peer)}@{addr_text(host, port)}"

    def end(self):
        if self.pos != len(self.data):
            raise ProtocolError("trailing bytes")


def frame(body: bytes) -> bytes:
    assert 0 < len(body) <= MAX_FRAME
    return struct.pack(">I", len(body)) + body


def option_bytes(value, encode) -> bytes:
    return b"\x00" if value is None else b"\x01" + encode(value)


# ------------------------------------------------------- messages (§6)

def req_block_layer(h: bytes) -> bytes:
    return varint(0) + h


def req_blocks(h: bytes, first: int, count: int) -> bytes:
    return varint(1) + h + varint(first) + varint(count)


def req_have(h: bytes) -> bytes:
    return varint(2) + h


def req_search(text: str, h=None, kind=None, min_size=None, max_size=None, max_hits=50, ttl=None) -> bytes:
    t = text.encode("utf-8")
    return (varint(5) + varint(len(t)) + t
            + option_bytes(h, lambda x: x)
            + option_bytes(kind, varint)
            + option_bytes(min_size, varint)
            + option_bytes(max_size, varint)
            + varint(max_hits)
            + option_bytes(ttl, lambda x: bytes([x])))


def read_hit(r: Reader) -> dict:
    h = r.take(32).hex()
    size = r.u64()
    name = r.string()
    kind = r.u32()
    if kind >= len(FILE_KINDS):
        raise ProtocolError("bad FileKind")
    sources = r.vec(r.peer_addr)
    source_count = r.u32()

    def relayed():
        leaf = peer_id_text(r.take(32))
        return {"leaf": leaf, "via": r.peer_addr()}

    return {"hash": h, "size": size, "name": name, "kind": FILE_KINDS[kind],
            "sources": sources, "source_count": source_count, "relayed": r.vec(relayed)}


def decode_response(body: bytes):
    """The `Response` variants a downloader and a searcher meet (§6.2), as
    (name, fields). Any other variant is a protocol error for them."""
    r = Reader(body)
    idx = r.u32()
    if idx == 0:
        out = ("BlockLayer", {"size": r.u64()})
    elif idx == 1:
        out = ("Blocks", {"first": r.u32(), "count": r.u32()})
    elif idx == 2:
        out = ("NotFound", {"hash": r.take(32).hex()})
    elif idx == 3:
        out = ("BadRequest", {"reason": r.string()})
    elif idx == 4:
        out = ("Have", {"blocks": r.take(r.length())})
    elif idx == 5:
        out = ("HaveAll", {})
    elif idx == 7:
        out = ("Busy", {"retry_after_ms": r.u32()})
    elif idx == 8:
        out = ("Hits", {"hits": r.vec(lambda: read_hit(r))})
    elif idx == 9:
        out = ("EndOfHits", {})
    elif idx == 10:
        out = ("NotSupernode", {"others": r.vec(r.peer_addr)})
    else:
        raise ProtocolError(f"unexpected Response variant {idx}")
    r.end()
    return out


# -------------------------------------------------- content (§7)

def layout(size: int):
    """(block size, block count) for a file of `size` bytes (§7.2)."""
    block = MIN_BLOCK_SIZE
    while -(-size // block) > MAX_BLOCKS:
        block *= 2
    return block, max(1, -(-size // block))


def layer_len(size: int) -> int:
    _, n = layout(size)
    return 0 if n == 1 else n * CV_LEN


def block_range(size: int, i: int):
    block, _ = layout(size)
    start = i * block
    return start, min(start + block, size) - start


def verify_layer(h: bytes, size: int, layer: bytes) -> list:
    """§7.3 "Verifying a layer": returns the list of block CVs."""
    _, n = layout(size)
    if len(layer) != layer_len(size):
        raise ProtocolError(f"block layer of {len(layer)} bytes, expected {layer_len(size)}")
    if n == 1:
        return []
    cvs = [layer[i:i + CV_LEN] for i in range(0, len(layer), CV_LEN)]
    if merge(cvs, root=True) != h:
        raise ProtocolError("block layer does not merge to the content hash")
    return cvs


def verify_block(h: bytes, size: int, cvs: list, i: int, data: bytes) -> None:
    """§7.4: length from the layout, then the CV at its offset (or, for a
    one-block file, the BLAKE3 hash)."""
    start, length = block_range(size, i)
    if len(data) != length:
        raise ProtocolError(f"block {i} is {len(data)} bytes, expected {length}")
    if not cvs:
        if blake3(data) != h:
            raise ProtocolError("the only block does not hash to the content hash")
    elif subtree_cv(data, start // 1024) != cvs[i]:
        raise ProtocolError(f"block {i} fails verification against the block layer")


# ------------------------------------------------ identity (§3.1-§3.3)

def load_or_create_key(path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if path is None:
        return Ed25519PrivateKey.generate()  # a fresh identity for this run
    if os.path.exists(path):
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SystemExit(f"{path}: not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def public_key_bytes(key) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def self_signed_certificate(key):
    """The X509 form of §3.2 item 3, laid out as the reference lays it out
    (so `x509_certificate_a` is reproduced byte for byte): serial 1, issuer
    = subject = CN <peer id>, valid 1970 to 9999, no extensions, v3."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, peer_id_text(public_key_bytes(key)))])
    utc = datetime.timezone.utc
    return (x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(datetime.datetime(1970, 1, 1, tzinfo=utc))
            .not_valid_after(datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=utc))
            .sign(key, None))


def der_element(data: bytes, pos: int):
    """One DER element at `pos`: (tag, start of contents, end). Lengths must
    be definite and in their shortest form (§3.2 item 3)."""
    if pos + 2 > len(data):
        raise ProtocolError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ProtocolError("indefinite or oversized DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        if data[pos] == 0 or length < 0x80:
            raise ProtocolError("DER length not in its shortest form")
        pos += count
    if pos + length > len(data):
        raise ProtocolError("truncated DER")
    return tag, pos, pos + length


def peer_key_from_x509(entry: bytes) -> bytes:
    """The key a receiver reads from an X509 entry, step by step as §3.2
    item 3 says: one SEQUENCE and nothing after it; in its tbsCertificate
    skip an optional [0] version and serialNumber, signature, issuer,
    validity, subject; the next element must be the 44-byte Ed25519
    SubjectPublicKeyInfo. Everything else (names, dates, extensions, the
    self-signature) is ignored."""
    tag, start, end = der_element(entry, 0)
    if tag != 0x30 or end != len(entry):
        raise ProtocolError("the certificate is not one DER SEQUENCE")
    tag, pos, tbs_end = der_element(entry, start)
    if tag != 0x30:
        raise ProtocolError("no tbsCertificate")
    tag, _, after = der_element(entry, pos)
    if tag == 0xA0:
        pos = after
    for want in (0x02, 0x30, 0x30, 0x30, 0x30):
        tag, _, after = der_element(entry, pos)
        if tag != want or after > tbs_end:
            raise ProtocolError("unexpected element in tbsCertificate")
        pos = after
    tag, _, after = der_element(entry, pos)
    spki = entry[pos:after]
    if len(spki) != 44 or not spki.startswith(ED25519_SPKI_PREFIX):
        raise ProtocolError("the certificate does not hold an Ed25519 key")
    return spki[len(ED25519_SPKI_PREFIX):]


def peer_key_from_certificate(cert) -> bytes:
    """The same for a certificate aioquic parsed (it keeps the DER bytes)."""
    from cryptography.hazmat.primitives import serialization
    return peer_key_from_x509(cert.public_bytes(serialization.Encoding.DER))


# ----------------------------------------------------- QUIC (§2, §3, §5)

class Peer:
    """One authenticated connection to a Canopy node."""

    def __init__(self, protocol, context):
        self.protocol = protocol
        self._context = context
        self._keepalive = None

    async def close(self, reason="done"):
        if self._keepalive:
            self._keepalive.cancel()
        # §14: connections are closed with application code 0 and a reason.
        self.protocol.close(error_code=0, reason_phrase=reason)
        await self._context.__aexit__(None, None, None)

    async def _keep_alive(self):
        # §2 "Keeping connections alive": aioquic sends no PING by itself,
        # and the idle timeout in force with a reference peer is 5 s.
        while True:
            await asyncio.sleep(KEEP_ALIVE)
            self.protocol._quic.send_ping(0)
            self.protocol.transmit()

    async def exchange(self, body: bytes):
        """Opens a stream, sends one request frame and FINs (§5.2 item 1);
        returns the reader for the answer."""
        reader, writer = await self.protocol.create_stream()
        writer.write(frame(body))
        writer.write_eof()
        return reader


async def read_frame(reader) -> bytes:
    head = await reader.readexactly(4)
    (length,) = struct.unpack(">I", head)
    if length == 0 or length > MAX_FRAME:
        raise ProtocolError(f"frame length {length}")
    return await reader.readexactly(length)


async def connect(peer_id: bytes, host: str, port: int, key) -> Peer:
    from aioquic.asyncio import connect as quic_connect
    from aioquic.quic.configuration import QuicConfiguration

    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        # No authorities, no name check (§3.2 item 3): the pin below is the check.
        verify_mode=ssl.CERT_NONE,
        server_name=SERVER_NAME,
        # The X509 form for our side: aioquic sends no RFC 7250 extensions,
        # so a Canopy server picks X509 both ways (§3.2 item 2).
        certificate=self_signed_certificate(key),
        private_key=key,
        # min(ours, theirs) applies; the reference's 5 s wins.
        idle_timeout=10.0,
        # Room for the biggest answer in flight (1,024 64 KiB blocks is more
        # than we ask for at once), so a reply is never held up by us.
        max_stream_data=8 * 1024 * 1024,
        max_data=32 * 1024 * 1024,
    )
    # No session tickets are stored or offered (§3.2 item 6): aioquic
    # resumes only when given a session_ticket, and we never give one.
    context = quic_connect(host, port, configuration=config, wait_connected=True)
    try:
        protocol = await asyncio.wait_for(context.__aenter__(), CONNECT_TIMEOUT)
    except asyncio.TimeoutError:
        raise ConnectionError(f"no handshake with {addr_text(host, port)} within {CONNECT_TIMEOUT:.0f} s")
    except ConnectionError as e:
        raise ConnectionError(f"handshake with {addr_text(host, port)} failed: {e}") from None
    peer = Peer(protocol, context)
    try:
        tls = protocol._quic.tls
        # §3.2 item 3: exactly one entry, read as the X509 form; item 5: pin.
        if tls._peer_certificate is None or tls._peer_certificate_chain:
            raise ProtocolError("the peer must present exactly one certificate")
        got = peer_key_from_certificate(tls._peer_certificate)
        if got != peer_id:
            raise ProtocolError(f"dialed {peer_id_text(peer_id)} but reached {peer_id_text(got)}")
        if tls.alpn_negotiated != ALPN:  # §2: no common ALPN id, no connection
            raise ProtocolError(f"ALPN {tls.alpn_negotiated!r} negotiated, not {ALPN!r}")
        # §3.2 "A refused client learns it late": wait until the handshake is
        # confirmed (HANDSHAKE_DONE) before trusting the connection, so a
        # server that turned our certificate down shows up as a refusal.
        for _ in range(int(CONNECT_TIMEOUT / 0.01)):
            if protocol._quic._handshake_confirmed:
                break
            if protocol._quic._close_event is not None:
                ev = protocol._quic._close_event
                raise ConnectionError(
                    f"refused by the handshake: error 0x{ev.error_code:x} {ev.reason_phrase!r}")
            await asyncio.sleep(0.01)
        else:
            raise ConnectionError("handshake never confirmed")
    except BaseException:
        await peer.close("refused")
        raise
    peer._keepalive = asyncio.ensure_future(peer._keep_alive())
    return peer


# -------------------------------------------------------- fetch (§8)

async def ask_blocks(peer: Peer, h: bytes, size: int, cvs: list, first: int, count: int):
    """One `Blocks` exchange; returns the verified blocks or raises. `Busy`
    is waited out (§8 step 6)."""
    while True:
        reader = await peer.exchange(req_blocks(h, first, count))
        name, fields = decode_response(await read_frame(reader))
        if name == "Busy":
            await asyncio.sleep(min(60.0, max(0.1, fields["retry_after_ms"] / 1000)))
            continue
        if name != "Blocks":
            raise ProtocolError(f"asked for blocks {first}..{first + count}, got {name} {fields}")
        if (fields["first"], fields["count"]) != (first, count):
            raise ProtocolError("Blocks answer does not echo the request")
        out = []
        for i in range(first, first + count):
            _, length = block_range(size, i)
            data = await reader.readexactly(length)
            verify_block(h, size, cvs, i, data)  # every block, before it is kept
            out.append(data)
        return out


async def layer_and_last_block(peer: Peer, h: bytes):
    """§8 steps 2 and 3: the verified block layer, then the last block,
    which binds the claimed size (§7.5). Returns (size, CVs, last block)."""
    reader = await peer.exchange(req_block_layer(h))
    name, fields = decode_response(await read_frame(reader))
    if name == "NotFound":
        raise ProtocolError("the peer does not share that content (NotFound)")
    if name != "BlockLayer":
        raise ProtocolError(f"asked for the block layer, got {name} {fields}")
    size = fields["size"]
    layer = await reader.readexactly(layer_len(size))
    cvs = verify_layer(h, size, layer)
    _, n = layout(size)
    last = (await ask_blocks(peer, h, size, cvs, n - 1, 1))[0]
    return size, cvs, last


async def fetch(peer: Peer, h: bytes, out_path: str, per_request=16, in_flight=4):
    # Steps 2 and 3 (the reference gives them 30 s together).
    size, cvs, last = await asyncio.wait_for(layer_and_last_block(peer, h), 30.0)
    _, n = layout(size)

    # Step 4: availability. We use a single source, which must hold it all.
    reader = await peer.exchange(req_have(h))
    name, fields = decode_response(await asyncio.wait_for(read_frame(reader), REQUEST_TIMEOUT))
    if name == "Have":
        bits = fields["blocks"]
        if len(bits) != (n + 7) // 8:
            raise ProtocolError("Have bitfield of the wrong length")
        if not all(bits[i // 8] >> (i % 8) & 1 for i in range(n)):
            raise ProtocolError("the peer holds only part of the file; this client uses one source")
    elif name != "HaveAll":
        raise ProtocolError(f"asked Have, got {name} {fields}")

    # Step 6: the other blocks, several requests at once on their own
    # streams, each block verified before it is written.
    part = out_path + ".part"
    with open(part, "wb") as f:
        f.truncate(size)
        start, _ = block_range(size, n - 1)
        f.seek(start)
        f.write(last)
        ranges = [(i, min(per_request, n - 1 - i)) for i in range(0, n - 1, per_request)]
        gate = asyncio.Semaphore(in_flight)

        async def one(first, count):
            async with gate:
                blocks = await asyncio.wait_for(ask_blocks(peer, h, size, cvs, first, count), REQUEST_TIMEOUT)
            offset, _ = block_range(size, first)
            f.seek(offset)
            f.write(b"".join(blocks))

        await asyncio.gather(*(one(a, c) for a, c in ranges))
    os.replace(part, out_path)
    return size, n


# ------------------------------------------------------- search (§10)

async def search(peer: Peer, text: str, max_hits: int):
    """Returns the hits merged by hash (§10 item 5)."""
    merged = {}
    for _attempt in range(20):
        reader = await peer.exchange(req_search(text, max_hits=max_hits))
        busy = None
        while True:
            try:
                body = await read_frame(reader)
            except asyncio.IncompleteReadError:
                raise ProtocolError("search stream ended before EndOfHits") from None
            name, fields = decode_response(body)
            if name == "Hits":
                for hit in fields["hits"]:
                    have = merged.setdefault(hit["hash"], hit)
                    if have is not hit:
                        have["sources"] += [s for s in hit["sources"] if s not in have["sources"]]
                        have["relayed"] += [s for s in hit["relayed"] if s not in have["relayed"]]
                        have["source_count"] = max(have["source_count"], hit["source_count"])
            elif name == "EndOfHits":
                return list(merged.values())
            elif name == "Busy" and not merged:
                busy = fields["retry_after_ms"]
                break
            elif name == "NotSupernode":
                raise ProtocolError("that node is not a supernode")
            elif name == "BadRequest":
                raise ProtocolError(f"search refused: {fields['reason']}")
            else:
                raise ProtocolError(f"unexpected answer to a search: {name}")
        await asyncio.sleep(min(60.0, max(0.1, busy / 1000)))
    raise ProtocolError("the supernode stayed busy")


# ------------------------------------------------------------ commands

async def cmd_fetch(args) -> int:
    h = bytes.fromhex(args.hash)
    if len(h) != 32:
        raise ValueError("a content hash is 64 hex characters")
    peer_id, host, port = parse_peer_addr(args.peer)
    peer = await connect(peer_id, host, port, load_or_create_key(args.key))
    try:
        size, n = await fetch(peer, h, args.output)
    finally:
        await peer.close("done")
    print(f"fetched {size} bytes in {n} blocks, every block verified: {args.output}")
    return 0


async def cmd_search(args) -> int:
    peer_id, host, port = parse_peer_addr(args.peer)
    text = " ".join(args.words)
    peer = await connect(peer_id, host, port, load_or_create_key(args.key))
    try:
        hits = await asyncio.wait_for(search(peer, text, args.max_hits), SEARCH_TIMEOUT)
    finally:
        await peer.close("done")
    for hit in hits:
        if args.json:
            print(json.dumps(hit))
        else:
            print(f"{hit['hash']}  {hit['size']:>12}  {hit['kind']:<8}  {hit['name']}")
            for s in hit["sources"]:
                print(f"    source  {s}")
            for r in hit["relayed"]:
                print(f"    relayed {r['leaf']} via {r['via']}")
    if not hits:
        print("no results", file=sys.stderr)
        return 1
    return 0


def cmd_id(args) -> int:
    print(peer_id_text(public_key_bytes(load_or_create_key(args.key))))
    return 0


def cmd_selftest(args) -> int:
    """Checks this client's encoders, decoders, BLAKE3 tree code and
    certificate against docs/vectors."""
    d = args.vectors

    def load(name):
        with open(os.path.join(d, name + ".json")) as f:
            return {v["name"]: v for v in json.load(f)["vectors"]}

    checks = 0

    def check(cond, what):
        nonlocal checks
        if not cond:
            raise AssertionError(what)
        checks += 1

    pattern = lambda start, length: bytes((start + i) % 251 for i in range(length))

    # §3.1 ids
    for v in load("ids").values():
        if v["name"].startswith("peer_id"):
            check(peer_id_text(bytes.fromhex(v["bytes"])) == v["text"], v["name"])
            check(parse_peer_id(v["text"]) == bytes.fromhex(v["bytes"]), v["name"])
    # §3.2 identity: the certificate we build is the reference's, byte for byte.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    ident = load("identity")
    a = ident["x509_certificate_a"]
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(a["secret_key"]))
    cert = self_signed_certificate(key)
    check(cert.public_bytes(serialization.Encoding.DER).hex() == a["entry"], "x509_certificate_a")
    for v in ident.values():
        if v["form"] != "X509":
            continue
        entry = bytes.fromhex(v["entry"])
        if v["result"] == "refuse":
            try:
                peer_key_from_x509(entry)
                check(False, v["name"])
            except ProtocolError:
                check(True, v["name"])
        else:
            check(peer_id_text(peer_key_from_x509(entry)) == v["result"], v["name"])
    # §4 postcard building blocks we encode
    for v in load("postcard").values():
        if v["type"] in ("u16", "u32", "u64"):
            check(varint(v["value"]).hex() == v["hex"], v["name"])
            bits = int(v["type"][1:])
            check(getattr(Reader(bytes.fromhex(v["hex"])), "u%d" % bits)() == v["value"], v["name"])
    # rejected varints
    for bad, bits in (("fa00", 32), ("ffffffff1f", 32), ("ffffffffff01", 32)):
        try:
            Reader(bytes.fromhex(bad)).varint(bits)
            check(False, bad)
        except ProtocolError:
            check(True, bad)
    # §6.1 requests we send
    req = load("request")
    hx = lambda s: bytes.fromhex(s[2:])
    for name, v in req.items():
        val = v["value"]
        if name in ("block_layer", "have"):
            body = (req_block_layer if name == "block_layer" else req_have)(hx(list(val.values())[0]["hash"]))
        elif name.startswith("blocks"):
            b = val["Blocks"]
            body = req_blocks(hx(b["hash"]), b["first"], b["count"])
        elif name.startswith("search"):
            q = val["Search"]
            body = req_search(q["text"], hx(q["hash"]) if q["hash"] else None,
                              None if q["kind"] is None else FILE_KINDS.index(q["kind"].lower()),
                              q["min_size"], q["max_size"], q["max_hits"], q["ttl"])
        else:
            continue
        check(frame(body).hex() == v["frame"], name)
    # §6.2 responses we read
    resp = load("response")
    for name in ("block_layer", "blocks", "not_found", "bad_request", "have", "have_all", "busy",
                 "hits", "end_of_hits", "not_supernode"):
        v = resp[name]
        f = bytes.fromhex(v["frame"])
        check(struct.unpack(">I", f[:4])[0] == len(f) - 4, name)
        got, fields = decode_response(f[4:])
        want = v["value"] if isinstance(v["value"], str) else next(iter(v["value"]))
        check(got == want, name)
    hit = decode_response(bytes.fromhex(resp["hits"]["frame"])[4:])[1]["hits"][0]
    check(hit["name"] == "abc.txt" and hit["kind"] == "document" and hit["source_count"] == 2, "hit")
    check(hit["sources"] == ["25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena@192.0.2.1:4000"], "hit")
    # §7.2 layout
    for v in load("layout").values():
        size = int(v["size"])
        b, n = layout(size)
        check((b, n, layer_len(size)) == (int(v["block_size"]), int(v["block_count"]), int(v["layer_len"])),
              v["name"])
    # §7.3 chaining values, node by node and compression by compression
    for v in load("chaining").values():
        if v["name"] == "chunk_64_steps":
            steps = []
            chunk_cv(pattern(v["offset"], v["len"]), v["counter"], steps=steps)
            want = [tuple(s.split()) for s in v["steps"]]
            check([(str(i), str(fl), cv.hex()) for i, (fl, cv) in enumerate(steps)] == want, v["name"])
            continue
        nodes = {}
        cv = subtree_cv(pattern(int(v["offset"]), int(v["len"])), int(v["offset"]) // 1024, nodes=nodes)
        check(cv.hex() == v["block_cv"], v["name"])
        for line in v["nodes"]:
            span, want = line.rsplit(" ", 1)
            parts = [int(x) for x in span.split("-")] if "-" in span else [int(x) for x in span.split()]
            key = (parts[0], parts[-1])
            check(nodes[key].hex() == want, f"{v['name']} node {span}")
    # §7.3 content: roots (files up to 200 KB hashed here) and layers
    for v in load("content").values():
        size = int(v["size"])
        h = bytes.fromhex(v["root"])
        if size <= 200_000:
            check(blake3(pattern(0, size)) == h, v["name"])
        cvs = verify_layer(h, size, bytes.fromhex(v["layer"]))
        if cvs:
            check(merge(cvs, root=True) == h, v["name"])
    # §7.4 single blocks, and the tampered ones fail
    content = load("content")
    for v in load("blocks").values():
        size, i = int(v["file_size"]), int(v["index"])
        start, length = block_range(size, i)
        data = pattern(start, length)
        cvs = [bytes.fromhex(content[f"size_{size}"]["layer"])[j:j + 32]
               for j in range(0, int(content[f"size_{size}"]["layer_len"]), 32)]
        h = bytes.fromhex(content[f"size_{size}"]["root"])
        verify_block(h, size, cvs, i, data)
        flipped = bytearray(data)
        flipped[int(v["flip_offset_in_block"])] ^= 1
        try:
            verify_block(h, size, cvs, i, bytes(flipped))
            check(False, v["name"] + " tampered")
        except ProtocolError:
            check(True, v["name"])
    print(f"selftest: {checks} checks passed")
    return 0


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("id", help="print this client's peer id")
    s.add_argument("--key", help="PEM PKCS#8 Ed25519 key file (created if missing)")
    s = sub.add_parser("fetch", help="fetch a file by content hash from one peer, verifying every block")
    s.add_argument("hash")
    s.add_argument("peer", metavar="PEERID@HOST:PORT")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--key", help="PEM PKCS#8 Ed25519 key file (default: a fresh key per run)")
    s = sub.add_parser("search", help="search a supernode")
    s.add_argument("words", nargs="+")
    s.add_argument("peer", metavar="PEERID@HOST:PORT")
    s.add_argument("--json", action="store_true", help="one JSON object per hit")
    s.add_argument("--max-hits", type=int, default=50)
    s.add_argument("--key")
    s = sub.add_parser("selftest", help="check this client against docs/vectors")
    s.add_argument("--vectors", default=os.path.join(here, "..", "..", "docs", "vectors"))
    args = p.parse_args(argv)
    try:
        if args.command == "id":
            return cmd_id(args)
        if args.command == "selftest":
            return cmd_selftest(args)
        return asyncio.run(cmd_fetch(args) if args.command == "fetch" else cmd_search(args))
    except (ProtocolError, ConnectionError, ValueError, OSError, asyncio.TimeoutError,
            asyncio.IncompleteReadError, AssertionError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
