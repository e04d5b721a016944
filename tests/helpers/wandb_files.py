"""Reading what an offline W&B run wrote, without the W&B service."""

from __future__ import annotations

from pathlib import Path


def wandb_records(path: Path):
    """The protobuf records of a `.wandb` file (a LevelDB-style log of 32 KiB blocks after a
    7-byte ':W&B' header; records may be split over blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        n, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind == 1:  # full
            yield pb.Record.FromString(chunk)
        elif kind == 2:  # first
            buf = chunk
        elif kind == 3:  # middle
            buf += chunk
        elif kind == 4:  # last
            yield pb.Record.FromString(buf + chunk)
