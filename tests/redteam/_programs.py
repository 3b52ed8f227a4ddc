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
