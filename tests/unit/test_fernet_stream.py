"""The streamed Fernet reader accepts exactly the tokens Fernet does: base64 padding only at the end."""

from __future__ import annotations

import base64
import io

import pytest
from cryptography.fernet import Fernet, InvalidToken

from recsys.privacy.fernet_stream import TokenError, decrypt_blocks

KEY = b"6P1Dm0tOtr1lW1lEgb3Fw6Zk0wG5m3yV8R8xQ2tHs9A="


def test_a_token_reads_back_as_fernet_decrypts_it():
    token = Fernet(KEY).encrypt(b"x" * 1000)
    assert b"".join(decrypt_blocks(io.BytesIO(token), [KEY])) == Fernet(KEY).decrypt(token)


def test_padding_inside_a_token_is_refused_as_fernet_refuses_it():
    token = Fernet(KEY).encrypt(b"x" * 1000)
    raw = base64.urlsafe_b64decode(token)
    # the same bytes, base64-encoded in two parts: "=" padding in the middle of the text
    spliced = base64.urlsafe_b64encode(raw[:100]) + base64.urlsafe_b64encode(raw[100:])
    assert b"=" in spliced[:-4]
    with pytest.raises(InvalidToken):
        Fernet(KEY).decrypt(spliced)
    with pytest.raises(TokenError, match="padding inside"):
        b"".join(decrypt_blocks(io.BytesIO(spliced), [KEY]))


def test_a_file_rewritten_in_place_after_it_was_authenticated_is_refused(tmp_path):
    import os

    from recsys.privacy.fernet_stream import DecryptedFile

    path = tmp_path / "f.enc"
    path.write_bytes(Fernet(KEY).encrypt(b"y" * 5000))
    with open(path, "rb") as src:
        view = DecryptedFile(src, [KEY])
        assert view.read(10) == b"y" * 10
        with open(path, "r+b") as w:  # same bytes, written again in place: a new mtime
            data = w.read()
            w.seek(0)
            w.write(data)
        os.utime(path, ns=(1, 1))
        with pytest.raises(TokenError, match="changed after it was authenticated"):
            view.read(10)
