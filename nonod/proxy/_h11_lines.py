"""h11's reading of a header line, made linear in the line's length.

h11 (0.16) reads each header line with ``name:OWS(value)OWS``, both ``OWS`` being
``[ \\t]*``. On a line that does not match, Python's backtracking engine tries every split of
a run of blanks after the colon between the two: time quadratic in the run. One header line
of 60,000 blanks and a NUL, sent to the proxy by a session's program (or to the metrics
endpoint by any local user), held the daemon's thread (and so the event loop, through the
GIL) for 10 to 18 seconds, per connection.

The value cannot begin with a blank, so the blanks after the colon all belong to the first
``OWS`` whenever the line matches: taking them possessively (``[ \\t]*+``) matches exactly
the same lines, with the same groups, and gives nothing back to try again on a line that does
not. :func:`make_linear` puts that expression in h11's place (the module global its reader
looks up on each call), once, and only over the very pattern this was written against: a
changed h11 is left as it is (and ``tests/proxy/test_h11_lines.py`` says so).
"""

from __future__ import annotations

import re
from typing import Final

import h11._abnf as abnf
import h11._readers as readers

_ORIGINAL: Final = abnf.header_field.encode("ascii")
LINEAR: Final = re.compile(
    rf"(?P<field_name>{abnf.field_name}):{abnf.OWS}+(?P<field_value>{abnf.field_value})"
    rf"{abnf.OWS}".encode("ascii"))


def make_linear() -> bool:
    """Put :data:`LINEAR` in h11's reader; whether it is there now."""
    current = readers.header_field_re
    if current is LINEAR:
        return True
    if current.pattern != _ORIGINAL:
        return False
    readers.header_field_re = LINEAR
    return True


make_linear()
