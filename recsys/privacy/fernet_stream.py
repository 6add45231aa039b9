"""Fernet tokens written and read in pieces, for files too large to hold in memory twice.

A Fernet token (the spec: https://github.com/fernet/spec/blob/master/Spec.md) is
``base64url(0x80 | timestamp | IV | AES-128-CBC(PKCS7(plaintext)) | HMAC-SHA256(everything before))``.
Nothing in it needs the whole plaintext at once: CBC, PKCS7 padding, HMAC and base64 all work on a
stream. :class:`FernetWriter` produces, from plaintext written in pieces, exactly the token
``Fernet(key).encrypt`` would produce for the same time and IV, so ``Fernet.decrypt`` (and
:meth:`recsys.privacy.crypto.Cipher.decrypt`) reads it unchanged; :func:`decrypt_blocks` reads a token
in pieces: it first checks the HMAC over the whole token and only then decrypts, so no byte of an
altered file is ever returned. No new construction: the same primitives of ``cryptography`` that
``Fernet`` itself uses, in the same order; the tests check both directions against ``Fernet``.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import time
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC

VERSION = b"\x80"
HEADER = 1 + 8 + 16  # version, timestamp, IV
TAG = 32
READ_BLOCK = 1 << 22  # base64 characters read at a time (a multiple of 4)


class TokenError(ValueError):
    """The token is not a Fernet token under any of the keys (wrong key, damaged or truncated file)."""


def split_key(key: bytes | str) -> tuple[bytes, bytes]:
    """A Fernet key (urlsafe base64 of 32 bytes) -> (signing key, encryption key), as ``Fernet`` does."""
    raw = base64.urlsafe_b64decode(key)
    if len(raw) != 32:
        raise ValueError("Fernet key must be 32 url-safe base64-encoded bytes")
    return raw[:16], raw[16:]


class FernetWriter(io.RawIOBase):
    """A writable binary file: what is written to it goes to ``sink`` as one Fernet token under ``key``.

    ``prefix`` is written before the token (the lake's file marker). Only :meth:`finish` completes the
    token (padding, HMAC); closing it without (an error, a dropped or garbage-collected writer, a buffered
    wrapper closed on the way out) leaves a token no reader accepts. ``sink`` is not closed.
    """

    def __init__(self, key: bytes | str, sink: BinaryIO, *, prefix: bytes = b"", iv: bytes | None = None):
        super().__init__()
        signing, encryption = split_key(key)
        self._sink = sink
        self._hmac = HMAC(signing, hashes.SHA256())
        iv = os.urandom(16) if iv is None else iv
        self._encryptor = Cipher(algorithms.AES(encryption), modes.CBC(iv)).encryptor()
        self._padder = padding.PKCS7(algorithms.AES.block_size).padder()
        self._pending = b""  # token bytes not yet base64-encoded (fewer than 3)
        self._size = 0
        self._aborted = False
        sink.write(prefix)
        self._emit(VERSION + int(time.time()).to_bytes(8, "big") + iv)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.closed:
            raise ValueError("write to a closed FernetWriter")
        data = bytes(data)
        self._emit(self._encryptor.update(self._padder.update(data)))
        self._size += len(data)
        return len(data)

    def tell(self) -> int:
        return self._size

    def _emit(self, raw: bytes, *, tag: bool = False) -> None:
        """Write ``raw`` base64-encoded (whole 3-byte groups; the rest waits), HMAC-ing all but the tag."""
        if not tag:
            self._hmac.update(raw)
        buf = self._pending + raw
        cut = len(buf) if tag else len(buf) - len(buf) % 3
        self._pending = buf[cut:]
        if cut:
            self._sink.write(base64.urlsafe_b64encode(buf[:cut]))

    def abort(self) -> None:
        """From now on :meth:`finish` refuses (after an error: what was written must not be read)."""
        self._aborted = True

    def finish(self) -> None:
        """Complete the token (padding, HMAC) and close the writer."""
        if self.closed or self._aborted:
            raise ValueError("finish() on a closed or aborted FernetWriter")
        self._emit(self._encryptor.update(self._padder.finalize()) + self._encryptor.finalize())
        self._emit(self._hmac.finalize(), tag=True)
        super().close()


def _decoded_blocks(src: BinaryIO, start: int) -> Iterator[bytes]:
    """The token at ``start`` of ``src``, base64-decoded piece by piece (strict alphabet and padding)."""
    src.seek(start)
    carry = b""
    while True:
        chunk = src.read(READ_BLOCK)
        buf = carry + chunk
        if not chunk:
            if buf:
                yield _b64(buf)
            return
        cut = len(buf) - len(buf) % 4
        if cut == len(buf):  # keep the last quantum back: it may carry the padding
            cut -= 4
        carry = buf[cut:]
        if cut > 0:
            yield _b64(buf[:cut], final=False)


def _b64(text: bytes, final: bool = True) -> bytes:
    # padding belongs to the token's last quantum only: a piece decoded alone would accept "=" inside it
    if not final and b"=" in text:
        raise TokenError("not a Fernet token (bad base64: padding inside the token)")
    try:
        return base64.b64decode(text.translate(_URLSAFE), validate=True)
    except (binascii.Error, ValueError):
        raise TokenError("not a Fernet token (bad base64)") from None


_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _split_tag(blocks: Iterator[bytes]) -> Iterator[tuple[bytes, bytes | None]]:
    """(bytes before the tag, None) pieces, then (b"", tag) at the end."""
    held = b""
    for block in blocks:
        held += block
        if len(held) > TAG:
            yield held[:-TAG], None
            held = held[-TAG:]
    if len(held) < TAG:
        raise TokenError("not a Fernet token (too short)")
    yield b"", held


def _verify(src: BinaryIO, start: int, keys: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """One pass over the token: the (signing, encryption) key whose HMAC matches; else TokenError."""
    macs = [HMAC(signing, hashes.SHA256()) for signing, _ in keys]
    head, size = b"", 0
    for body, tag in _split_tag(_decoded_blocks(src, start)):
        if len(head) < HEADER:
            head += body[: HEADER - len(head)]
        size += len(body)
        for mac in macs:
            mac.update(body)
        if tag is not None:
            if size < HEADER or head[:1] != VERSION or (size - HEADER) % 16:
                raise TokenError("not a Fernet token (bad header or length)")
            for mac, key in zip(macs, keys, strict=True):
                try:
                    mac.verify(tag)
                except InvalidSignature:
                    continue
                return key
    raise TokenError("the token's HMAC matches none of the keys (wrong key, or the file was altered)")


def decrypt_blocks(src: BinaryIO, keys: list[bytes | str], *, start: int = 0) -> Iterator[bytes]:
    """The plaintext of the Fernet token at ``start`` of the seekable file ``src``, piece by piece.

    ``keys``: Fernet keys, tried in order (``MultiFernet``). The whole token is authenticated first (one
    pass), then decrypted (a second pass): nothing is yielded from a token that does not verify. The
    second pass authenticates what it decrypts again and raises before the last piece if the file changed
    between the passes, so a caller that commits nothing before the iterator is exhausted (collect) never
    keeps bytes of an altered file.

    Raises:
        TokenError: wrong key, or a damaged or truncated token (before any plaintext is yielded), or a
            file altered during the second pass (before the last piece).
    """
    signing, encryption = _verify(src, start, [split_key(k) for k in keys])
    mac = HMAC(signing, hashes.SHA256())
    head, decryptor, unpadder = b"", None, padding.PKCS7(algorithms.AES.block_size).unpadder()
    for body, tag in _split_tag(_decoded_blocks(src, start)):
        mac.update(body)
        if tag is not None:
            try:
                mac.verify(tag)
            except InvalidSignature:
                raise TokenError("the file changed while it was decrypted (second HMAC)") from None
        if decryptor is None:
            head += body
            if len(head) < HEADER:
                continue
            iv, body = head[9:HEADER], head[HEADER:]
            decryptor = Cipher(algorithms.AES(encryption), modes.CBC(iv)).decryptor()
        out = unpadder.update(decryptor.update(body))
        if out:
            yield out
    if decryptor is None:
        raise TokenError("not a Fernet token (too short)")
    try:
        out = unpadder.update(decryptor.finalize()) + unpadder.finalize()
    except ValueError:
        raise TokenError("bad padding in an authenticated token") from None
    if out:
        yield out


def _file_identity(src: BinaryIO) -> tuple | None:
    """(inode, size, mtime) of a file on disk; None for an in-memory buffer (an object read whole)."""
    try:
        st = os.fstat(src.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class DecryptedFile(io.RawIOBase):
    """A read-only, *seekable* view of the plaintext of the Fernet token at ``start`` of ``src``.

    Parquet is read from its footer backwards and by column chunk, so a streamed (front-to-back)
    decryption does not fit it. CBC and base64 are both random-access: plaintext block ``b`` is
    ``AES-decrypt(C[b]) xor C[b-1]`` (``C[-1]`` is the IV), and every 4 base64 characters are 3 token
    bytes. So a read at any offset decodes and decrypts only the blocks it covers, and memory does not
    grow with the file. The whole token is authenticated first (:func:`_verify`, one pass, nothing is
    read before); :meth:`verify_again` authenticates it again, so a caller that commits nothing before
    calling it (validate, anonymize) never keeps bytes of a file altered between the passes.

    Raises:
        TokenError: wrong key, or a damaged or truncated token.
    """

    def __init__(self, src: BinaryIO, keys: list[bytes | str], *, start: int = 0):
        super().__init__()
        self._src, self._start, self._keys = src, start, [split_key(k) for k in keys]
        self._stat = _file_identity(src)
        _, encryption = _verify(src, start, self._keys)
        self._aes = algorithms.AES(encryption)
        self._unchanged()
        src.seek(0, io.SEEK_END)
        chars = src.tell() - start
        if chars % 4:
            raise TokenError("not a Fernet token (bad base64 length)")
        src.seek(start + chars - 4)
        tail = src.read(4)
        token_len = chars // 4 * 3 - tail.count(b"=")
        self._cipher_len = token_len - HEADER - TAG  # a multiple of 16 (checked by _verify)
        self._iv = self._token(9, 16)
        last = self._plain_blocks(self._cipher_len // 16 - 1, 1)
        pad = last[-1]
        if not 1 <= pad <= 16 or last[-pad:] != bytes([pad]) * pad:
            raise TokenError("bad padding in an authenticated token")
        self._size = self._cipher_len - pad
        self._pos = 0

    def _token(self, offset: int, n: int) -> bytes:
        """Token bytes [offset, offset + n), from the base64 text."""
        q0, q1 = offset // 3, (offset + n + 2) // 3
        self._src.seek(self._start + 4 * q0)
        raw = _b64(self._src.read(4 * (q1 - q0)))
        skip = offset - 3 * q0
        return raw[skip : skip + n]

    def _unchanged(self) -> None:
        """Raise if the file is no longer the one authenticated (rewritten in place, grown, replaced)."""
        if _file_identity(self._src) != self._stat:
            raise TokenError("the file changed after it was authenticated")

    def _plain_blocks(self, first: int, count: int) -> bytes:
        """Plaintext of cipher blocks [first, first + count) (padding included)."""
        self._unchanged()
        prev = self._iv if first == 0 else self._token(HEADER + 16 * (first - 1), 16)
        body = self._token(HEADER + 16 * first, 16 * count)
        dec = Cipher(self._aes, modes.CBC(prev)).decryptor()
        return dec.update(body) + dec.finalize()

    def verify_again(self) -> None:
        """Authenticate the whole token again (after reading: the file did not change meanwhile)."""
        _verify(self._src, self._start, self._keys)

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buf) -> int:
        n = max(0, min(len(buf), self._size - self._pos))
        if n == 0:
            return 0
        first, last = self._pos // 16, (self._pos + n - 1) // 16
        plain = self._plain_blocks(first, last - first + 1)
        skip = self._pos - 16 * first
        buf[:n] = plain[skip : skip + n]
        self._pos += n
        return n
