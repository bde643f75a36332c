"""Read W&B offline runs (``.../wandb/offline-run-*/run-<id>.wandb``) without a server.

A ``.wandb`` file is wandb's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0)
followed by LevelDB-log framed records, each one a ``wandb.proto.wandb_internal_pb2.Record``
(wandb's own message definitions). wandb >= 0.20 moved its Python reader (``datastore``) into the
Go core; this is the same framing, decoded with wandb's protobuf classes, so that tests and review
notebooks can check what a W&B user will see (runs, ids, groups, job types, names, config, logged
keys, tables) before ``wandb sync``.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = 32768
_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_RECORD = struct.Struct("<IHB")  # crc32, length, type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _masked_crc_ok(crc: int, rtype: int, data: bytes) -> bool:
    return zlib.crc32(data, zlib.crc32(bytes([rtype]))) & 0xFFFFFFFF == crc


def iter_records(path: str | Path) -> Iterator[Any]:
    """Every protobuf ``Record`` of one ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, version = _HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(f"{path}: not a W&B transaction log (header {ident!r} {magic:#x})")
    pos, parts = _HEADER.size, b""
    while pos + _RECORD.size <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _RECORD.size:  # block trailer: zero padding
            pos += left_in_block
            continue
        crc, length, rtype = _RECORD.unpack_from(data, pos)
        if rtype == 0 and length == 0:  # zero fill (pre-allocated tail)
            pos += left_in_block
            continue
        chunk = data[pos + _RECORD.size : pos + _RECORD.size + length]
        if len(chunk) < length:
            break  # a run still being written: the last record is incomplete
        if not _masked_crc_ok(crc, rtype, chunk):
            raise ValueError(f"{path}: corrupt record at byte {pos}")
        pos += _RECORD.size + length
        if rtype == _FULL:
            parts = chunk
        elif rtype == _FIRST:
            parts = chunk
            continue
        elif rtype == _MIDDLE:
            parts += chunk
            continue
        else:  # _LAST
            parts += chunk
        record = pb.Record()
        record.ParseFromString(parts)
        yield record


@dataclass
class OfflineRun:
    """What the W&B UI will show for one run once synced."""

    path: Path
    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    resumed: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history_keys: set[str] = field(default_factory=set)
    history: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    exit_code: int | None = None


def _value(json_text: str) -> Any:
    try:
        return json.loads(json_text)
    except ValueError:
        return json_text


def read_run(wandb_file: str | Path) -> OfflineRun:
    """Decode one ``run-<id>.wandb`` file into an :class:`OfflineRun`."""
    run = OfflineRun(path=Path(wandb_file))
    for record in iter_records(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.name, run.group = r.run_id, r.display_name, r.run_group
            run.job_type = r.job_type
            run.project, run.tags = r.project, list(r.tags)
            run.resumed = run.resumed or bool(r.resumed)
            for item in r.config.update:
                run.config[item.key] = _value(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                key = item.key or "/".join(item.nested_key)
                run.config[key] = _value(item.value_json)
        elif kind == "history":
            items = record.history.item
            row = {(i.key or "/".join(i.nested_key)): _value(i.value_json) for i in items}
            run.history_keys.update(row)
            run.history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[item.key or "/".join(item.nested_key)] = _value(item.value_json)
        elif kind == "artifact":
            run.artifacts.append(f"{record.artifact.name}:{record.artifact.type}")
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def find_runs(root: str | Path) -> list[OfflineRun]:
    """Every W&B run (offline or online files) under ``root``, sorted by path."""
    files = sorted(Path(root).rglob("run-*.wandb"))
    return [read_run(f) for f in files]
