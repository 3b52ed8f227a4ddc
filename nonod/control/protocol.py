"""The protocol moved to :mod:`nonod.protocol` (a leaf module that ``nonoctl`` and the
sessions import without the control server); this name remains for code written against it."""

from ..protocol import *  # noqa: F403
