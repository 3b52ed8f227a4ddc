/* libnonolooks.so: FsLook.unchanged's system calls (nonod/profiles/_fslook.py) in one call.
 *
 * A kept profile resolution is checked by asking the filesystem again every question its
 * resolution asked (~80-230 lstat/stat calls for the default profile). From Python each call
 * gives up the interpreter's lock and takes it back: run beside the daemon's event loop (a
 * launch's check goes on while the launch is prepared), the loop woke for every one of them
 * and found the lock taken again. Called through ctypes (which lets the lock go for the whole
 * call), these questions are asked with the lock given up once; the answers and the rules that
 * derive some of them are _fslook's, unchanged:
 *
 *   - lstat of each path, parents before what is below them; a path recorded missing whose
 *     parent (recorded, index ``parent[i]``) is missing now is missing too, not asked;
 *   - stat of each path; where the same path's lstat (index ``same[j]``) found no symlink now
 *     (or nothing), stat's answer is that one, not asked.
 *
 * An answer is the file type (st_mode & S_IFMT), or -1 when the call failed (any errno);
 * lstat's answer for a directory also holds its S_IWOTH and S_IWGRP bits (whether every
 * user, or its group's members, may make names in it: _fslook's ``placed`` depends on them,
 * review25, known1), which stat's does not.
 * Each function returns the index of the first path whose answer differs from the recorded
 * one, or -1 when none does. The calls are made with this thread's credentials: the caller's
 * file identity on the system daemon (nonod._callerfs.acting_as). */
#define _GNU_SOURCE
#include <sys/stat.h>

#define MISSING (-1)
#define NOT_ASKED (-2)

static int look(const char *path, int follow) {
    struct stat st;
    if ((follow ? stat(path, &st) : lstat(path, &st)) != 0)
        return MISSING;
    int answer = (int)(st.st_mode & S_IFMT);
    if (!follow && S_ISDIR(st.st_mode))
        answer |= (int)(st.st_mode & (S_IWOTH | S_IWGRP));
    return answer;
}

long nono_lstat_differs(const char *const *paths, const int *recorded, const long *parent,
                        long n, int *now) {
    for (long i = 0; i < n; i++) {
        if (recorded[i] == MISSING && parent[i] >= 0 && parent[i] < i &&
            now[parent[i]] == MISSING) {
            now[i] = MISSING;
            continue;
        }
        int got = look(paths[i], 0);
        if (got != recorded[i])
            return i;
        now[i] = got;
    }
    return -1;
}

long nono_stat_differs(const char *const *paths, const int *recorded, const long *same,
                       long m, const int *now, long n) {
    for (long j = 0; j < m; j++) {
        int seen = same[j] >= 0 && same[j] < n ? now[same[j]] : NOT_ASKED;
        if (seen == NOT_ASKED || (seen != MISSING && S_ISLNK(seen)))
            seen = look(paths[j], 1);
        if (seen != MISSING)
            seen &= S_IFMT; /* lstat's answer, derived: its type only */
        if (seen != recorded[j])
            return j;
    }
    return -1;
}

/* The kept mount plan's check (nonod/sandbox/_mounts.py, _Look.unchanged): the file type only
 * (st_mode & S_IFMT, or MISSING), by lstat where follow[i] is 0 and by stat where it is 1, each
 * path asked; the index of the first answer that differs from recorded[i], or -1. */
long nono_kinds_differ(const char *const *paths, const int *follow, const int *recorded,
                       long n) {
    for (long i = 0; i < n; i++) {
        struct stat st;
        int got = (follow[i] ? stat(paths[i], &st) : lstat(paths[i], &st)) != 0
                      ? MISSING
                      : (int)(st.st_mode & S_IFMT);
        if (got != recorded[i])
            return i;
    }
    return -1;
}
