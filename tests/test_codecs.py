"""The one set of codecs (util/codecs.py) the store, the save reader and the remote share."""

from __future__ import annotations

import gzip
import io
import os

import pytest

from pytest_madcache.util.codecs import (
    REMOTE_CODECS,
    STORE_CODECS,
    CorruptStream,
    decompressing,
    parse_codec,
    shrinks,
    sniff,
)


def test_codec_names_as_settings_take_them() -> None:
    assert parse_codec("off", STORE_CODECS) == parse_codec("", STORE_CODECS) == "none"
    assert parse_codec(" ZSTD ", STORE_CODECS) == "zstd"
    assert parse_codec("gzip", REMOTE_CODECS) == "gzip"
    with pytest.raises(ValueError, match="expected 'none' or 'zstd'"):
        parse_codec("gzip", STORE_CODECS)


def test_the_first_bytes_decide_whether_to_compress() -> None:
    assert shrinks("gzip", b"weights " * 100_000)
    assert not shrinks("gzip", os.urandom(1 << 20))  # random weights are kept as they are
    assert not shrinks("gzip", b"")


def test_several_gzip_members_and_zero_padding_read_as_one_stream() -> None:
    data = gzip.compress(b"first member\n") + gzip.compress(b"second\n") + b"\0" * 512
    assert sniff(data[:4]) == "gzip" and sniff(b"plain tar") == "none"
    assert decompressing(io.BytesIO(data), "gzip").read() == b"first member\nsecond\n"


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_gzip_stream_is_one_error(damage: str) -> None:
    data = gzip.compress(os.urandom(4096))
    data = data[: len(data) // 2] if damage == "truncated" else data[:20] + b"\xff" * 40 + data[60:]
    with pytest.raises(CorruptStream, match="gzip stream"):
        decompressing(io.BytesIO(data), "gzip").read()


def test_zstd_frames_read_across() -> None:
    import zstandard  # the test extra installs it

    c = zstandard.ZstdCompressor(level=1)
    data = c.compress(b"a" * 1000) + c.compress(b"b" * 10)
    assert sniff(data[:4]) == "zstd"
    assert decompressing(io.BytesIO(data), "zstd").read() == b"a" * 1000 + b"b" * 10


def test_a_decompressing_reader_closes_its_source_as_a_context_manager() -> None:
    import zstandard  # the test extra installs it

    for codec, data in (("gzip", gzip.compress(b"x" * 10)), ("zstd", zstandard.ZstdCompressor().compress(b"x" * 10))):
        source = io.BytesIO(data)
        with decompressing(source, codec) as reader:
            assert reader.read(4) + reader.read() == b"x" * 10
        assert source.closed, codec
