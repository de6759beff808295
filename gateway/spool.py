"""The gateway's durable spool: every captured exchange waits here until the observer acks it.

Layout (in `SMOLTBOT_HOME/spool`): append-only segment files `<seq>.seg`, each a run of
records `[u32 payload length][u32 crc32 of id+payload][32 bytes exchange id][payload]`, and
beside each an ack file `<seq>.ack` of u32 record indices acked so far. A segment is deleted
once every record in it is acked; before that, each acked record's payload is removed from the
file (a hole punched in its place, or zeros written where the filesystem cannot punch holes), so
an acknowledged exchange does not linger on disk: at once after a quiet moment, else at the end
of a window of `erase_interval` (50 ms) that gathers the acks of a busy gateway into one job.
On start, whatever is unacked is replayed; a torn last record (a crash mid-write) fails its CRC
and is ignored, and a record whose payload is all zeros is one whose hole was punched (acked).

Why segments rather than one file per exchange: an append is one `write` of bytes we already
hold, instead of create + write + rename + unlink and two directory updates per call, which
matters at thousands of calls per second on one core (see docs/benchmarks.md). Writes happen
on the event loop after the response has gone out, batched per loop turn; fsyncs are batched
on a timer in a single worker thread, so a machine crash loses at most that interval (a
process crash loses nothing written: it is in the page cache), and the ack
file is never fsynced at all: a lost ack only means the observer sees a duplicate, which it
recognises by exchange id.

The spool is bounded: when a new record would not fit, whole oldest segments are dropped,
and their unacked records are counted and logged, never silently lost. When the disk refuses
(full, read-only, gone), records stay in memory and are shipped from there; each one that
could not be written is counted (`write_failures`), and the calls go on.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import errno
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["Record", "Spool"]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<II32s")
_ACK = struct.Struct("<I")
_ID_LENGTH = 32


class Record:
    """One spooled exchange. `payload` is None once it has been evicted from memory."""

    __slots__ = ("acked", "exchange_id", "failures", "index", "offset", "payload", "segment", "size",
                 "written")

    def __init__(self, segment: _Segment, index: int, offset: int, exchange_id: str,
                 payload: bytes | None, size: int, written: bool) -> None:
        self.segment = segment
        self.index = index
        self.offset = offset
        self.size = size
        self.exchange_id = exchange_id
        self.payload = payload
        self.acked = False
        self.written = written
        #: Failed attempts to ship it (see the shipper); in memory only.
        self.failures = 0


class _Segment:
    __slots__ = ("ack_fd", "ack_path", "fd", "path", "pending_acks", "records", "seq", "size", "unacked")

    def __init__(self, directory: Path, seq: int) -> None:
        self.seq = seq
        self.path = directory / f"{seq:012d}.seg"
        self.ack_path = directory / f"{seq:012d}.ack"
        self.records: list[Record] = []
        self.size = 0
        self.unacked = 0
        self.fd: int | None = None
        self.ack_fd: int | None = None
        self.pending_acks: list[int] = []


class Spool:
    """Append, ack, replay. Used from one event loop; `open()` before use, `close()` at the end."""

    def __init__(self, directory: Path, max_bytes: int, *, segment_bytes: int | None = None,
                 memory_bytes: int = 64 * 1024 * 1024, fsync_interval: float = 0.5,
                 erase_interval: float = 0.05,
                 on_drop: Callable[[int], None] | None = None,
                 on_write_failure: Callable[[int], None] | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(64 * 1024, min(16 * 1024 * 1024, max_bytes // 8))
        self.memory_bytes = memory_bytes
        self.fsync_interval = fsync_interval
        self.erase_interval = erase_interval
        self._on_drop = on_drop
        self._on_write_failure = on_write_failure
        self._segments: collections.OrderedDict[int, _Segment] = collections.OrderedDict()
        self._active: _Segment | None = None
        self._next_seq = 0
        self._total_bytes = 0
        self._unacked = 0
        self._write_queue: list[tuple[_Segment, list[bytes], list[Record]]] = []
        self._flush_scheduled = False
        self._fsync_scheduled = False
        self._dirty: set[_Segment] = set()
        self._resident: collections.deque[Record] = collections.deque()
        self._resident_bytes = 0
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smoltbot-spool")
        self._pending_io: set[asyncio.Future[None]] = set()
        #: Jobs handed to the io thread (each wakes it and then the loop: for benchmarks and tests).
        self.io_jobs = 0
        self.dropped = 0
        #: Records being built off the event loop, on their way here (counted in `depth`).
        self.building = 0
        #: Exchanges that could not be written to disk (kept in memory and shipped from there).
        self.write_failures = 0
        #: Acked payloads waiting to be removed from their segment files: path -> [(offset, length)].
        self._to_erase: dict[Path, list[tuple[int, int]]] = {}
        #: Open while erases wait for the end of their window (see `_erase_window`).
        self._erase_timer: asyncio.TimerHandle | None = None
        self._closed = False

    # ------------------------------------------------------------------ state

    @property
    def depth(self) -> int:
        """Exchanges not yet acked, those whose record is still being built included."""
        return self._unacked + self.building

    @property
    def size_bytes(self) -> int:
        return self._total_bytes

    def unacked(self) -> Iterator[Record]:
        """Every unacked record, oldest first."""
        for segment in list(self._segments.values()):
            for record in segment.records:
                if not record.acked:
                    yield record

    # ------------------------------------------------------------------ start

    def open(self) -> int:
        """Creates the directory and loads what a previous run left; returns how many are unacked."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        for path in sorted(self.directory.glob("*.seg")):
            try:
                seq = int(path.stem)
            except ValueError:
                continue
            self._next_seq = max(self._next_seq, seq + 1)
            self._load_segment(path, seq)
        for ack_path in self.directory.glob("*.ack"):
            if not ack_path.with_suffix(".seg").exists():
                ack_path.unlink(missing_ok=True)
        if self._unacked:
            logger.info("spool: %d unshipped exchanges from a previous run (%d bytes)",
                        self._unacked, self._total_bytes)
        return self._unacked

    def _load_segment(self, path: Path, seq: int) -> None:
        data = path.read_bytes()
        acked: set[int] = set()
        segment = _Segment(self.directory, seq)
        try:
            raw_acks = segment.ack_path.read_bytes()
        except FileNotFoundError:
            raw_acks = b""
        usable = len(raw_acks) - len(raw_acks) % _ACK.size
        acked.update(index for (index,) in _ACK.iter_unpack(raw_acks[:usable]))
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, crc, raw_id = _HEADER.unpack_from(data, offset)
            end = offset + _HEADER.size + length
            erased = False
            if end > len(data) or zlib.crc32(data[offset + 8:end]) != crc:
                start = offset + _HEADER.size
                erased = end <= len(data) and length > 0 and data.count(0, start, end) == length
                if not erased:
                    logger.warning("spool: %s ends with a damaged record at byte %d; ignoring the rest",
                                   path.name, offset)
                    break
            index = len(segment.records)
            record = Record(segment, index, offset, raw_id.decode("ascii", "replace"), None,
                            end - offset, written=True)
            if index in acked or erased:
                record.acked = True
            else:
                segment.unacked += 1
            segment.records.append(record)
            offset = end
        segment.size = len(data)
        if segment.unacked == 0:
            path.unlink(missing_ok=True)
            segment.ack_path.unlink(missing_ok=True)
            return
        self._segments[seq] = segment
        self._total_bytes += segment.size
        self._unacked += segment.unacked

    # ------------------------------------------------------------------ append

    def append(self, exchange_id: str, payload: bytes) -> Record | None:
        """Spools one exchange (written to disk on the next loop turn). None if it was dropped
        because it alone is larger than the spool."""
        raw_id = exchange_id.encode("ascii")
        if len(raw_id) != _ID_LENGTH:
            raise ValueError("exchange ids are 32 hex digits")
        size = _HEADER.size + len(payload)
        if size > self.max_bytes:
            self._count_dropped(1, f"an exchange of {size} bytes is larger than the whole spool")
            return None
        while self._total_bytes + size > self.max_bytes and self._segments:
            self._drop_oldest_segment()
        active = self._active
        if active is None or (active.records and active.size + size > self.segment_bytes):
            active = self._rotate()
        header = _HEADER.pack(len(payload), zlib.crc32(payload, zlib.crc32(raw_id)), raw_id)
        record = Record(active, len(active.records), active.size, exchange_id, payload, size, written=False)
        active.records.append(record)
        active.size += size
        active.unacked += 1
        self._total_bytes += size
        self._unacked += 1
        self._resident.append(record)
        self._resident_bytes += len(payload)
        if self._write_queue and self._write_queue[-1][0] is active:
            chunks, records = self._write_queue[-1][1], self._write_queue[-1][2]
            chunks.append(header)
            chunks.append(payload)
            records.append(record)
        else:
            self._write_queue.append((active, [header, payload], [record]))
        self._schedule_flush()
        return record

    def _rotate(self) -> _Segment:
        previous = self._active
        segment = _Segment(self.directory, self._next_seq)
        self._next_seq += 1
        try:
            segment.fd = os.open(segment.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as error:
            # Its records stay in memory (fd None: never written) and are shipped from there.
            logger.warning("spool: cannot create %s (%s); exchanges kept in memory only",
                           segment.path.name, error)
        self._segments[segment.seq] = segment
        self._active = segment
        self._submit_io(_fsync_directory, str(self.directory))
        if previous is not None:
            self._retire(previous)
        return segment

    def _retire(self, segment: _Segment) -> None:
        """A segment that takes no more appends: its data is fsynced and its fd closed in the
        io thread, after anything still queued for it has been written."""
        self._flush_now()
        fd, segment.fd = segment.fd, None
        self._dirty.discard(segment)
        if fd is not None:
            self._submit_io(_fsync_and_close, fd)
        if segment.unacked == 0:
            self._delete(segment)

    # ------------------------------------------------------------------ ack

    def ack(self, record: Record) -> None:
        if record.acked:
            return
        record.acked = True
        segment = record.segment
        segment.unacked -= 1
        self._unacked -= 1
        if record.payload is not None:
            self._resident_bytes -= len(record.payload)
            record.payload = None
        if record.written:
            self._to_erase.setdefault(segment.path, []).append(
                (record.offset + _HEADER.size, record.size - _HEADER.size))
        if segment.unacked == 0:
            if segment is not self._active:
                self._delete(segment)
                return
            if segment.size >= self.segment_bytes // 4:
                self._active = None
                self._retire(segment)
                return
        segment.pending_acks.append(record.index)
        self._dirty.add(segment)
        self._schedule_flush()

    def _delete(self, segment: _Segment) -> None:
        if self._segments.pop(segment.seq, None) is None:
            return
        self._total_bytes -= segment.size
        if self._active is segment:
            self._active = None
        self._write_queue = [entry for entry in self._write_queue if entry[0] is not segment]
        self._dirty.discard(segment)
        if segment.ack_fd is not None:
            os.close(segment.ack_fd)
            segment.ack_fd = None
        if segment.fd is not None:
            fd, segment.fd = segment.fd, None
            self._submit_io(os.close, fd)
        segment.path.unlink(missing_ok=True)
        segment.ack_path.unlink(missing_ok=True)

    def _drop_oldest_segment(self) -> None:
        segment = next(iter(self._segments.values()))
        lost = 0
        for record in segment.records:
            if not record.acked:
                record.acked = True
                lost += 1
                if record.payload is not None:
                    self._resident_bytes -= len(record.payload)
                    record.payload = None
        segment.unacked = 0
        self._unacked -= lost
        if segment is self._active:
            self._active = None
        self._delete(segment)
        if lost:
            self._count_dropped(lost, f"spool full ({self.max_bytes} bytes)")

    def _count_unwritten(self, records: list[Record]) -> None:
        self.write_failures += len(records)
        if self._on_write_failure is not None:
            self._on_write_failure(len(records))

    def _count_dropped(self, count: int, why: str) -> None:
        self.dropped += count
        logger.warning("spool: dropped %d oldest unshipped exchange(s): %s", count, why)
        if self._on_drop is not None:
            self._on_drop(count)

    # ------------------------------------------------------------------ read

    def payload_of(self, record: Record) -> bytes:
        """The record's payload, from memory or, if evicted, from its segment file."""
        if record.payload is not None:
            return record.payload
        with open(record.segment.path, "rb") as handle:
            handle.seek(record.offset + _HEADER.size)
            return handle.read(record.size - _HEADER.size)

    # ------------------------------------------------------------------ io

    def _schedule_flush(self) -> None:
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush_now()
            return
        self._flush_scheduled = True
        loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        queue, self._write_queue = self._write_queue, []
        for segment, chunks, records in queue:
            if segment.fd is None:
                self._count_unwritten(records)
                continue
            try:
                _write_all(segment.fd, chunks)
            except OSError as error:
                # Disk full or gone: the exchanges stay in memory and are still shipped; only
                # their durability across a restart is lost. The segment takes no more records
                # (its end may be a torn record); the next append starts a new one.
                logger.warning("spool: cannot write %s (%s); %d exchange(s) kept in memory only",
                               segment.path.name, error, len(records))
                self._count_unwritten(records)
                fd, segment.fd = segment.fd, None
                self._submit_io(os.close, fd)
                if self._active is segment:
                    self._active = None
                continue
            for record in records:
                record.written = True
                if record.acked:  # acked before it reached the disk: erase it right away
                    self._to_erase.setdefault(segment.path, []).append(
                        (record.offset + _HEADER.size, record.size - _HEADER.size))
            self._dirty.add(segment)
        for segment in list(self._dirty):
            if segment.pending_acks:
                acks, segment.pending_acks = segment.pending_acks, []
                try:
                    if segment.ack_fd is None:
                        segment.ack_fd = os.open(segment.ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                                 0o600)
                    os.write(segment.ack_fd, struct.pack(f"<{len(acks)}I", *acks))
                except OSError as error:  # a lost ack costs a duplicate on replay, which is recognised
                    logger.warning("spool: cannot record acks in %s (%s)", segment.ack_path.name, error)
        if self._to_erase and self._erase_timer is None:
            self._erase_window()
        self._evict()
        if self._dirty and not self._fsync_scheduled and not self._closed:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._fsync_scheduled = True
            loop.call_later(self.fsync_interval, self._fsync_dirty)

    def _erase_window(self) -> None:
        """Hands the acked payloads gathered so far to the io thread, then keeps later ones for
        `erase_interval`: under load one job (two thread wake-ups) per window rather than per loop
        turn, each of which cost the loop's core more than the call it followed (issue 16). An
        ack after a quiet moment is erased at once."""
        self._erase_timer = None
        if not self._to_erase:
            return
        to_erase, self._to_erase = self._to_erase, {}
        for path, ranges in to_erase.items():
            self._submit_io(_erase, path, ranges)
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._erase_timer = loop.call_later(self.erase_interval, self._erase_window)

    def _evict(self) -> None:
        while self._resident_bytes > self.memory_bytes and self._resident:
            record = self._resident[0]
            if record.payload is not None and not record.written:
                break
            self._resident.popleft()
            if record.payload is not None:
                self._resident_bytes -= len(record.payload)
                record.payload = None
        while self._resident and self._resident[0].payload is None:
            self._resident.popleft()

    def _fsync_dirty(self) -> None:
        self._fsync_scheduled = False
        fds = [segment.fd for segment in self._dirty if segment.fd is not None]
        self._dirty.clear()
        for fd in fds:
            self._submit_io(_fsync, fd)

    def _submit_io(self, function: Callable[..., None], *args: object) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._io.submit(function, *args).result()
            return
        self.io_jobs += 1
        future = loop.run_in_executor(self._io, function, *args)
        self._pending_io.add(future)
        future.add_done_callback(self._io_done)

    def _io_done(self, future: asyncio.Future[None]) -> None:
        self._pending_io.discard(future)
        if not future.cancelled() and future.exception() is not None:
            logger.warning("spool: disk operation failed: %s", future.exception())

    async def close(self) -> None:
        """Writes and fsyncs everything; deletes what is fully acked."""
        if self._closed:
            return
        self._flush_now()
        self._closed = True
        if self._erase_timer is not None:
            self._erase_timer.cancel()
        self._erase_window()
        active, self._active = self._active, None
        if active is not None:
            fd, active.fd = active.fd, None
            if active.unacked == 0:
                self._segments.pop(active.seq, None)
                self._total_bytes -= active.size
                active.path.unlink(missing_ok=True)
                active.ack_path.unlink(missing_ok=True)
            if fd is not None:
                self._submit_io(_fsync_and_close, fd)
        for segment in self._segments.values():
            if segment.ack_fd is not None:
                os.close(segment.ack_fd)
                segment.ack_fd = None
        if self._pending_io:
            await asyncio.gather(*self._pending_io, return_exceptions=True)
        self._io.shutdown(wait=True)


def _write_all(fd: int, chunks: list[bytes]) -> None:
    total = sum(len(chunk) for chunk in chunks)
    written = os.writev(fd, chunks)
    if written < total:  # short write (disk full or a huge batch): finish it the slow way
        rest = b"".join(chunks)[written:]
        while rest:
            rest = rest[os.write(fd, rest):]


def _fsync(fd: int) -> None:
    try:
        os.fdatasync(fd)
    except OSError as error:
        logger.warning("spool: fsync failed: %s", error)


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc_path = ctypes.util.find_library("c")
_fallocate = getattr(ctypes.CDLL(_libc_path, use_errno=True), "fallocate", None) if _libc_path else None
if _fallocate is not None:
    _fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    _fallocate.restype = ctypes.c_int
_ZEROS = bytes(1024 * 1024)


def _erase(path: Path, ranges: list[tuple[int, int]]) -> None:
    """Removes acked payloads from a segment file: a punched hole frees the blocks and reads as
    zeros; where holes are not supported, zeros are written over the payload instead."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:  # the segment is gone already, which is better still
        return
    try:
        for offset, length in ranges:
            if _fallocate is not None and _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
                                                     offset, length) == 0:
                continue
            if _fallocate is not None and ctypes.get_errno() not in (errno.EOPNOTSUPP, errno.ENOSYS):
                logger.debug("spool: punching a hole in %s failed: errno %d", path.name, ctypes.get_errno())
            end = offset + length
            while offset < end:
                offset += os.pwrite(fd, _ZEROS[:end - offset], offset)
    finally:
        os.close(fd)
