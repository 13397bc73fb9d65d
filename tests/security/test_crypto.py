"""Encryption at rest: round trips, and every way a ciphertext can be altered is caught."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import pytest

from aiaas.core.errors import ConfigurationError
from aiaas.security.crypto import (
    MAGIC,
    NONCE_BYTES,
    TAG_BYTES,
    DecryptionError,
    decrypt_file,
    decrypt_to_bytes,
    derive_kek,
    encrypt_file,
    new_data_key,
    open_decrypted,
    unwrap_key,
    wrap_key,
)

AAD = b"org_1/file_1"
HEADER_BYTES = len(MAGIC) + 1 + 4


def encrypt(data: bytes, key: bytes, *, aad: bytes = AAD, chunk_size: int = 1024 * 1024) -> bytes:
    out = io.BytesIO()
    assert encrypt_file(io.BytesIO(data), out, key, aad=aad, chunk_size=chunk_size) == len(data)
    return out.getvalue()


def decrypt(blob: bytes, key: bytes, *, aad: bytes = AAD) -> bytes:
    out = io.BytesIO()
    n = decrypt_file(io.BytesIO(blob), out, key, aad=aad)
    assert n == len(out.getvalue())
    return out.getvalue()


# ---- keys -------------------------------------------------------------------------------


def test_kek_is_deterministic_per_secret() -> None:
    secret = "x" * 40
    assert derive_kek(secret) == derive_kek(secret)
    assert len(derive_kek(secret)) == 32
    assert derive_kek(secret) != derive_kek(secret + "y")
    with pytest.raises(ConfigurationError):
        derive_kek("")


def test_data_keys_are_random() -> None:
    a, b = new_data_key(), new_data_key()
    assert len(a) == 32 and a != b


def test_wrap_unwrap_round_trip_and_binding() -> None:
    kek, other_kek = derive_kek("a" * 40), derive_kek("b" * 40)
    key = new_data_key()
    wrapped = wrap_key(kek, key, org_id="org_1")
    assert key not in wrapped
    assert unwrap_key(kek, wrapped, org_id="org_1") == key
    with pytest.raises(DecryptionError) as info:
        unwrap_key(other_kek, wrapped, org_id="org_1")
    assert key.hex() not in str(info.value) and kek.hex() not in str(info.value)
    with pytest.raises(DecryptionError):
        unwrap_key(kek, wrapped, org_id="org_2")
    tampered = bytearray(wrapped)
    tampered[-1] ^= 1
    with pytest.raises(DecryptionError):
        unwrap_key(kek, bytes(tampered), org_id="org_1")
    with pytest.raises(DecryptionError):
        unwrap_key(kek, wrapped[:-1], org_id="org_1")
    with pytest.raises(ValueError):
        wrap_key(kek, b"short", org_id="org_1")


def test_decryption_error_is_an_internal_error() -> None:
    assert DecryptionError("x").status == 500


# ---- files ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 3 * 1024 * 1024 + 17])
def test_round_trip(size: int) -> None:
    key = new_data_key()
    data = os.urandom(size)
    blob = encrypt(data, key, chunk_size=1024 if size < 4096 else 1024 * 1024)
    assert blob.startswith(MAGIC)
    assert decrypt(blob, key) == data


def test_frames_have_the_documented_size() -> None:
    key = new_data_key()
    blob = encrypt(b"a" * 2500, key, chunk_size=1000)
    # 3 frames: 1000 + 1000 + 500 plaintext bytes, each with nonce and tag.
    assert len(blob) == HEADER_BYTES + 3 * (NONCE_BYTES + TAG_BYTES) + 2500
    assert len(encrypt(b"", key)) == HEADER_BYTES + NONCE_BYTES + TAG_BYTES


def test_same_plaintext_encrypts_differently() -> None:
    key = new_data_key()
    assert encrypt(b"same", key) != encrypt(b"same", key)


def test_wrong_key_or_aad_fails() -> None:
    key = new_data_key()
    blob = encrypt(b"secret rows", key)
    with pytest.raises(DecryptionError) as info:
        decrypt(blob, new_data_key())
    assert key.hex() not in str(info.value)
    with pytest.raises(DecryptionError):
        decrypt(blob, key, aad=b"org_2/file_1")


def _frames(blob: bytes, chunk_size: int) -> tuple[bytes, list[bytes]]:
    frame = NONCE_BYTES + chunk_size + TAG_BYTES
    body = blob[HEADER_BYTES:]
    return blob[:HEADER_BYTES], [body[i : i + frame] for i in range(0, len(body), frame)]


@pytest.mark.parametrize("offset", [0, 8, 9, HEADER_BYTES, HEADER_BYTES + NONCE_BYTES + 5, -1])
def test_any_flipped_bit_is_detected(offset: int) -> None:
    key = new_data_key()
    blob = bytearray(encrypt(os.urandom(3000), key, chunk_size=1000))
    blob[offset] ^= 0x01
    with pytest.raises(DecryptionError):
        decrypt(bytes(blob), key)


def test_truncation_at_a_frame_boundary_is_detected() -> None:
    key = new_data_key()
    header, frames = _frames(encrypt(os.urandom(3000), key, chunk_size=1000), 1000)
    assert len(frames) == 3
    for keep in (0, 1, 2):
        with pytest.raises(DecryptionError):
            decrypt(header + b"".join(frames[:keep]), key)


def test_truncation_inside_a_frame_is_detected() -> None:
    key = new_data_key()
    blob = encrypt(os.urandom(3000), key, chunk_size=1000)
    for cut in (1, 10, 500, 1100):
        with pytest.raises(DecryptionError):
            decrypt(blob[:-cut], key)
    with pytest.raises(DecryptionError):
        decrypt(blob[: HEADER_BYTES - 1], key)


def test_reordered_duplicated_or_appended_frames_are_detected() -> None:
    key = new_data_key()
    header, frames = _frames(encrypt(os.urandom(3500), key, chunk_size=1000), 1000)
    a, b, c, last = frames
    for bad in ([b, a, c, last], [a, a, c, last], [a, b, c, last, last], [a, b, c, last + b"x"]):
        with pytest.raises(DecryptionError):
            decrypt(header + b"".join(bad), key)


def test_a_frame_from_another_file_is_rejected() -> None:
    key = new_data_key()
    header, frames = _frames(encrypt(os.urandom(2500), key, chunk_size=1000), 1000)
    _, other = _frames(encrypt(os.urandom(2500), key, chunk_size=1000, aad=b"org_1/file_2"), 1000)
    with pytest.raises(DecryptionError):
        decrypt(header + frames[0] + other[1] + frames[2], key)


def test_not_an_encrypted_file() -> None:
    with pytest.raises(DecryptionError, match="not an aiaas encrypted file"):
        decrypt(b"id,text\n1,hello world\n", new_data_key())


def test_decrypt_to_bytes_and_open_decrypted(tmp_path: Path) -> None:
    key = new_data_key()
    data = os.urandom(2 * 1024 * 1024 + 5)
    path = tmp_path / "data.enc"
    path.write_bytes(encrypt(data, key))
    assert decrypt_to_bytes(path, key, aad=AAD) == data
    chunks = list(open_decrypted(path, key, aad=AAD))
    assert [len(c) for c in chunks] == [1024 * 1024, 1024 * 1024, 5]
    assert b"".join(chunks) == data
    with pytest.raises(DecryptionError):
        decrypt_to_bytes(path, key, aad=b"other")


def test_large_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    """24 MiB through encrypt and decrypt, file to file, with a small Python heap peak."""
    key = new_data_key()
    plain, enc, back = tmp_path / "plain.bin", tmp_path / "plain.enc", tmp_path / "back.bin"
    block = os.urandom(1024 * 1024)
    with open(plain, "wb") as fh:
        for i in range(24):
            fh.write(bytes([i]) + block[1:])
    chunk = 256 * 1024
    tracemalloc.start()
    try:
        with open(plain, "rb") as src, open(enc, "wb") as dst:
            assert encrypt_file(src, dst, key, aad=AAD, chunk_size=chunk) == 24 * 1024 * 1024
        _, enc_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with open(enc, "rb") as src, open(back, "wb") as dst:
            assert decrypt_file(src, dst, key, aad=AAD) == 24 * 1024 * 1024
        _, dec_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = sum(len(c) for c in open_decrypted(enc, key, aad=AAD))
        _, iter_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 24 * 1024 * 1024
    # A handful of chunks in flight (read-ahead, ciphertext, plaintext), never the file.
    for peak in (enc_peak, dec_peak, iter_peak):
        assert peak < 8 * chunk, peak
    assert back.read_bytes() == plain.read_bytes()
