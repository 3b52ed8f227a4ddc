/* What nono-reaper's parts share (reaper.h): numbers on the command line, writing records,
 * reading the configuration the Python side serialized, ending what a child subreaper was
 * left with. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "reaper.h"

int number(const char *s, long *out) {
    char *end;
    errno = 0;
    *out = strtol(s, &end, 10);
    /* every number here is an int (a pid, a descriptor, a flag): one that is not would be
     * truncated where it is used ("4294967299" naming descriptor 3) */
    return errno || *s == '\0' || *end != '\0' || *out < INT_MIN || *out > INT_MAX ? -1 : 0;
}

void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

void write_all(int fd, const void *data, size_t len) {
    const unsigned char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* the daemon has gone: nobody is left to tell */
        }
        p += n;
        len -= (size_t)n;
    }
}

int take(struct reader *r, void *out, size_t n) {
    if ((size_t)(r->end - r->p) < n)
        return -1;
    memcpy(out, r->p, n);
    r->p += n;
    return 0;
}

int take_u32(struct reader *r, uint32_t *v) {
    unsigned char b[4];
    if (take(r, b, 4))
        return -1;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 0;
}

int take_u64(struct reader *r, uint64_t *v) {
    uint32_t lo, hi;
    if (take_u32(r, &lo) || take_u32(r, &hi))
        return -1;
    *v = (uint64_t)hi << 32 | lo;
    return 0;
}

int take_count(struct reader *r, size_t min_size, uint32_t *n) {
    if (take_u32(r, n))
        return -1;
    return *n > (size_t)(r->end - r->p) / min_size ? -1 : 0;
}

char *take_str(struct reader *r) {
    uint32_t len;
    if (take_u32(r, &len) || (size_t)(r->end - r->p) < len)
        return NULL;
    char *s = malloc((size_t)len + 1);
    if (!s)
        return NULL;
    memcpy(s, r->p, len);
    s[len] = '\0';
    r->p += len;
    return s;
}

/* ``len`` bytes of ``data`` and ``n`` (at most 4) descriptors in one message; 0 or -1. */
int send_fds(int sock, const void *data, size_t len, const int *fds, size_t n) {
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    union {
        char buf[CMSG_SPACE(4 * sizeof(int))];
        struct cmsghdr align;
    } u;
    if (n > 4)
        return errno = EINVAL, -1;
    memset(&u, 0, sizeof u);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = CMSG_SPACE(n * sizeof(int))};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(n * sizeof(int));
    memcpy(CMSG_DATA(c), fds, n * sizeof(int));
    ssize_t sent;
    while ((sent = sendmsg(sock, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    return sent == (ssize_t)len ? 0 : -1;
}

/* A string that can be a path: shorter than PATH_MAX, no NUL inside. */
char *take_path(struct reader *r) {
    struct reader peek = *r;
    uint32_t len;
    if (take_u32(&peek, &len) || len >= 4096 || (size_t)(peek.end - peek.p) < len ||
        memchr(peek.p, '\0', len))
        return NULL;
    return take_str(r);
}

/* Kill and reap whatever was reparented to us until nothing is left. */
void end_descendants(void) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    for (;;) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            long pid = 0;
            int digits = 0;
            ssize_t n;
            while ((n = read(fd, buf, sizeof buf)) > 0) {
                for (ssize_t i = 0; i < n; i++) {
                    if (buf[i] >= '0' && buf[i] <= '9') {
                        pid = pid * 10 + (buf[i] - '0');
                        digits = 1;
                    } else if (digits) {
                        kill((pid_t)pid, SIGKILL);
                        pid = 0;
                        digits = 0;
                    }
                }
            }
            if (digits)
                kill((pid_t)pid, SIGKILL);
            close(fd);
        }
        if (waitpid(-1, NULL, 0) < 0 && errno == ECHILD)
            return;
    }
}

#ifdef __SANITIZE_ADDRESS__
/* The review build only (make reaper-asan): the reaper runs with an empty environment, so
 * ASAN_OPTIONS cannot reach it. By default AddressSanitizer sets RLIMIT_CORE to 0 at start,
 * which the session's seccomp filter refuses (the limit stays at 1 byte): it would die before
 * main. Leak checking at exit would need ptrace, refused too. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "disable_coredump=0:detect_leaks=0"; }
#endif
