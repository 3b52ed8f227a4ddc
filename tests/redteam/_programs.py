"""Programs the red team's sessions run (standard library only, for any uid's python)."""

#: Reads each path given; prints ``PATH CONTENT`` or ``PATH ExceptionName``.
READ = r'''
import sys
for path in sys.argv[1:]:
    try:
        print(path, open(path).read().strip())
    except OSError as exc:
        print(path, type(exc).__name__)
'''

#: ``BASE NAME...``: appends a line that would run code to each NAME under BASE, making the
#: directories on the way; prints ``NAME WRITTEN`` or ``NAME ExceptionName``.
PLANT = r'''
import os, sys
for name in sys.argv[2:]:
    path = os.path.join(sys.argv[1], name)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a") as f:
            f.write("touch /tmp/pwned\n")
        print(name, "WRITTEN")
    except OSError as exc:
        print(name, type(exc).__name__)
'''

#: A prelude: ``libc`` (ctypes, errno kept) and ``attempt(NAME, CALL)``, which prints
#: ``NAME ok`` or ``NAME ERRNO-NAME``.
ATTEMPT = r'''
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, call):
    try:
        call()
        print(name, "ok")
    except OSError as exc:
        print(name, errno.errorcode[exc.errno])
'''
