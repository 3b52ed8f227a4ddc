"""``session.json`` on disk: made once, then rewritten in place while it fits in a page (no
temporary file, no inode allocated and freed per change), replaced whole otherwise; what is
read back is always the last record written."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from nonod import protocol as p
from nonod.sessions._records import (
    ARGV_KEPT,
    IN_PLACE_MAX,
    SessionRecord,
    read_records,
    record_decoder,
    record_encoder,
    shorten_argv,
    write_record,
)


def _record(session_id: str, **fields: object) -> SessionRecord:
    base: dict[str, object] = {"name": "n", "argv": ("/bin/true",), "state": "starting"}
    return SessionRecord(id=session_id, owner_uid=0, owner_gid=0, uid=0, gid=0,
                         started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                         **(base | fields))  # type: ignore[arg-type]


def test_a_record_is_rewritten_in_place_and_reads_back_as_the_last_one(tmp_path: Path) -> None:
    directory = tmp_path / "sessions" / "0123abcd"
    long = _record("0123abcd", name="x" * 300)
    descriptors = len(os.listdir("/proc/self/fd"))
    write_record(directory, record_encoder.encode(long))  # its directory made on the way
    path = directory / "session.json"
    inode = path.stat().st_ino
    short = _record("0123abcd", state="exited", exit_code=0)
    write_record(directory, record_encoder.encode(short))
    assert path.stat().st_ino == inode  # the same file: no inode made or freed
    assert sorted(os.listdir(directory)) == ["session.json"]
    assert record_decoder.decode(path.read_bytes()) == short  # the longer one's tail: blanks
    assert read_records(tmp_path / "sessions") == [short]
    assert len(os.listdir("/proc/self/fd")) == descriptors


def test_a_record_larger_than_a_page_is_replaced_whole(tmp_path: Path) -> None:
    directory = tmp_path / "sessions" / "0123abcd"
    write_record(directory, record_encoder.encode(_record("0123abcd")))
    big = _record("0123abcd", name="y" * IN_PLACE_MAX)
    write_record(directory, record_encoder.encode(big))
    assert read_records(tmp_path / "sessions") == [big]
    small = _record("0123abcd", state="exited")
    write_record(directory, record_encoder.encode(small))  # the file is past a page now
    assert read_records(tmp_path / "sessions") == [small]
    assert sorted(os.listdir(directory)) == ["session.json"]


def test_a_fifo_in_the_records_place_is_replaced_without_blocking(tmp_path: Path) -> None:
    directory = tmp_path / "0123abcd"
    directory.mkdir()
    os.mkfifo(directory / "session.json")
    record = _record("0123abcd")
    write_record(directory, record_encoder.encode(record))
    assert read_records(tmp_path) == [record]


def test_a_records_size_stays_one_page_while_it_grows_and_shrinks(tmp_path: Path) -> None:
    """A rewrite never changes the file's size: a power loss cannot leave a size that
    disagrees with the data on disk (a longer record cut at the old size, or the old one
    followed by NULs up to the new size), which the next daemon could not read."""
    directory = tmp_path / "0123abcd"
    path = directory / "session.json"
    sizes = []
    for record in (_record("0123abcd"), _record("0123abcd", name="x" * 1000),
                   _record("0123abcd", state="exited")):
        write_record(directory, record_encoder.encode(record))
        sizes.append(path.stat().st_size)
        assert read_records(tmp_path) == [record]
    assert sizes == [IN_PLACE_MAX] * 3


def test_a_record_with_a_second_name_is_replaced_not_written_through(tmp_path: Path) -> None:
    directory = tmp_path / "0123abcd"
    first = _record("0123abcd")
    write_record(directory, record_encoder.encode(first))
    other = tmp_path / "elsewhere"
    os.link(directory / "session.json", other)
    second = _record("0123abcd", state="exited")
    write_record(directory, record_encoder.encode(second))
    assert read_records(tmp_path) == [second]
    assert record_decoder.decode(other.read_bytes()) == first  # the other name kept its data


def test_a_long_argv_is_kept_as_a_prefix_cut_at_a_character_and_said_so() -> None:
    short = _record("0123abcd", argv=("/bin/echo", "x" * 100))
    shorten_argv(short)
    assert short.argv == ("/bin/echo", "x" * 100) and short.argv_shortened is None
    # The cut falls inside a two-byte character: the character goes, and what follows.
    argv = ("a" * (ARGV_KEPT - 1), "é" * 10, "tail")
    record = _record("0123abcd", argv=argv)
    shorten_argv(record)
    assert record.argv == ("a" * (ARGV_KEPT - 1),)
    whole = p.ArgvShortened(arguments=3, bytes=ARGV_KEPT - 1 + 20 + 4)
    assert record.argv_shortened == whole
    shorten_argv(record)  # (again: what the whole one was stays)
    assert record.argv_shortened == whole


def test_a_record_written_before_the_bound_is_read_back_shortened(tmp_path: Path) -> None:
    directory = tmp_path / "sessions" / "0123abcd"
    write_record(directory, record_encoder.encode(
        _record("0123abcd", argv=("/bin/true", "y" * 3 * ARGV_KEPT))))
    (read,) = read_records(tmp_path / "sessions")
    assert read.argv == ("/bin/true", "y" * (ARGV_KEPT - len("/bin/true")))
    assert read.argv_shortened == p.ArgvShortened(arguments=2,
                                                  bytes=len("/bin/true") + 3 * ARGV_KEPT)
