"""``nonoctl``'s tables (``ps``, ``audit list``, ``profile list``): aligned, escaped, and
written at once (a thousand sessions: one write, not a thousand line-buffered ones)."""

from __future__ import annotations

import io

from nonoctl._output import Output


class _Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_a_table_is_aligned_escaped_and_written_once() -> None:
    sink = _Writes()
    Output(stdout=sink).table(("ID", "NAME", "COMMAND"), [
        ("a1", "x\x1b[2Jy", "sleep 600"),
        ("b2222222", "", "tab\there  "),
        ("c3", "naïve 漢", ""),
    ])
    assert sink.getvalue() == (
        "ID        NAME       COMMAND\n"
        "a1        x\\x1b[2Jy  sleep 600\n"
        "b2222222             tab\\x09here\n"
        "c3        naïve 漢\n"
    )
    assert sink.writes == 1


def test_an_empty_table_is_its_header() -> None:
    sink = _Writes()
    Output(stdout=sink).table(("ID", "NAME"), [])
    assert sink.getvalue() == "ID  NAME\n"


def test_the_ps_table_shows_every_column_as_documented() -> None:
    # One pass over the rows (the tree only when a tool session is listed); the cells as
    # they always were: state with exit code or signal, "-" for no pid or profile, the age,
    # the command cut at 40 characters, a tool session under its parent.
    import datetime as dt

    from nonod import protocol as p

    now = dt.datetime.now(dt.UTC)
    infos = (
        p.SessionInfo(id="aaaa1111", name="bot", state="running", pid=42, profile="gitbot",
                      argv=("python3", "bot.py"), started_at=now - dt.timedelta(hours=3)),
        p.SessionInfo(id="bbbb2222", name="x\x1b[2Jy", state="exited", exit_code=3,
                      argv=("sh", "-c", "x" * 60), started_at=now - dt.timedelta(days=2)),
        p.SessionInfo(id="cccc3333", name="tool", state="exited", signal=9, parent="aaaa1111",
                      started_at=now - dt.timedelta(minutes=5)),
        p.SessionInfo(id="dddd4444", name="new", state="starting", started_at=now),
    )
    sink = _Writes()
    Output(stdout=sink).sessions(infos)
    assert sink.getvalue() == (
        "ID            NAME       STATE             PID  PROFILE  STARTED  COMMAND\n"
        "aaaa1111      bot        running           42   gitbot   3h ago   python3 bot.py\n"
        "  └ cccc3333  tool       killed (SIGKILL)  -    -        5m ago\n"
        "bbbb2222      x\\x1b[2Jy  exited (3)        -    -        2d ago   sh -c "
        + "x" * 33 + "…\n"
        "dddd4444      new        starting          -    -        0s ago\n"
    )
    assert sink.writes == 1
    plain = _Writes()
    Output(stdout=plain).sessions(infos[:1])
    assert plain.getvalue().splitlines()[1].split() == [
        "aaaa1111", "bot", "running", "42", "gitbot", "3h", "ago", "python3", "bot.py"]


def test_inspect_says_when_the_command_is_a_prefix_of_the_one_run() -> None:
    import datetime as dt

    from nonod import protocol as p

    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    detail = p.SessionDetail(id="abcd1234", name="bot", state="exited", started_at=when,
                             uid=1000, gid=1000, cwd="/srv", argv=("/bin/echo", "aaa"),
                             argv_shortened=p.ArgvShortened(arguments=7, bytes=600010))
    sink = io.StringIO()
    Output(stdout=sink).session(detail)
    (command,) = [line for line in sink.getvalue().splitlines() if line.startswith("command")]
    assert command.endswith("/bin/echo aaa ... (shortened: 7 arguments, 600010 bytes in all; "
                            "`nonoctl audit show abcd1234` has them whole)"), command
    whole = io.StringIO()
    Output(stdout=whole).session(p.SessionDetail(
        id="abcd1234", name="bot", state="exited", started_at=when, uid=1000, gid=1000,
        cwd="/srv", argv=("/bin/echo", "aaa")))
    assert "command" in whole.getvalue() and "shortened" not in whole.getvalue()
