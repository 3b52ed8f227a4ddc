/* libnonorelay.so: the pump's wait and its tunnels' short messages (nonod/proxy/_pump.py).
 *
 * A fresh proxied request's messages each cost the pump thread a turn of its Python loop: the
 * epoll's answer as a list of tuples, a tunnel looked up, a direction's read and write with a
 * bytes object between them, its counters. Here one call waits on the pump's epoll and relays
 * such messages itself, with the interpreter's lock given up (ctypes lets it go for the whole
 * call), and returns to Python only what Python must decide or do.
 *
 * A tunnel is "routed" here (nono_relay_route) only while Python holds nothing of it: each
 * direction has ended or copies through userspace, holds no byte and waits to read. For an event of a routed
 * socket that is readable and nothing else, this code reads up to COPY_SIZE bytes and, when
 * fewer came (a message, not a bulk transfer), writes all of them to the other socket: the
 * bytes are counted to that direction and the tunnel's last activity is now; nothing is
 * returned. Everything else, and every event of a socket that is not routed (a watched
 * descriptor, the wake-up, a tunnel of Python's), is returned as a record, and the tunnel
 * it concerns is unrouted first, with both directions' counts and its last activity, so that
 * Python holds the whole of its state again:
 *
 *   - the end of the tunnel's last source (a read of 0 bytes): EOF. (The end of a source
 *     while the other direction goes on is relayed here, as Python's _source_ended and
 *     _remask do it: the other socket is half-closed, and this one leaves the epoll);
 *   - a read or write error: ERROR with its errno (nothing was written of what was read);
 *   - a full read (a bulk transfer, perhaps), or a write that fell short or would block: the
 *     bytes read are in the caller's ``spill`` buffer, with how many were written: SPILL.
 *     After a SPILL the buffer is the caller's until the next call: the rest of the events of
 *     this wait are returned as they came (PLAIN), their tunnels unrouted;
 *   - an event with other flags than EPOLLIN (an error; a hang-up, unless the socket's only
 *     direction left is its read): PLAIN, nothing done.
 *
 * The same work, record by record, is what Python's loop does with the events it polls
 * itself (nonod/proxy/_pump.py's _move): this file decides nothing about what may pass. The
 * wait lasts until ``deadline`` (CLOCK_MONOTONIC seconds, as Python's time.monotonic) or until
 * there is a record to return, whichever is first; its timeout is rounded up to milliseconds,
 * as Python's epoll.poll rounds it.
 *
 * The table of routes is indexed by descriptor number and owned by the one thread that calls
 * these functions for a pump. Python unroutes a tunnel before it closes either socket, so an
 * entry never outlives its descriptor. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define COPY_SIZE 65536 /* _pump._COPY_SIZE */
#define MAX_EVENTS 64
#define RECORD 10 /* int64 fields per record */

enum kind { PLAIN = 0, END_OF_FILE = 1, ERROR = 2, SPILL = 3 };

struct route {
    int32_t peer;  /* the other socket of the tunnel, -1 if not routed */
    int32_t ended; /* this socket's direction reached its end of file (its peer half-closed) */
    uint64_t moved; /* bytes read from this socket and written to the peer while routed */
    int64_t last;  /* nanoseconds (CLOCK_MONOTONIC) of this direction's last relay, or 0 */
};

struct relay {
    struct route *routes;
    size_t size;
    int deferred; /* the last wait left its routed sockets' events for this one */
};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct relay *nono_relay_new(void) {
    return calloc(1, sizeof(struct relay));
}

void nono_relay_free(struct relay *relay) {
    if (relay != NULL) {
        free(relay->routes);
        free(relay);
    }
}

static int routed(const struct relay *relay, int fd) {
    return fd >= 0 && (size_t)fd < relay->size && relay->routes[fd].peer >= 0;
}

/* Relay between the sockets a and b here from now on; ``ended``: bit 0 if a's direction (a
 * to b) has ended already (a is then out of the epoll), bit 1 if b's has. 0, or -1 (errno:
 * EINVAL for a bad or already routed descriptor, or both directions ended; ENOMEM). */
int nono_relay_route(struct relay *relay, int a, int b, int ended) {
    if (a < 0 || b < 0 || a == b || routed(relay, a) || routed(relay, b) || (ended & 3) == 3) {
        errno = EINVAL;
        return -1;
    }
    size_t need = (size_t)(a > b ? a : b) + 1;
    if (need > relay->size) {
        size_t size = relay->size ? relay->size : 64;
        while (size < need)
            size *= 2;
        struct route *grown = realloc(relay->routes, size * sizeof(struct route));
        if (grown == NULL) {
            errno = ENOMEM;
            return -1;
        }
        for (size_t i = relay->size; i < size; i++)
            grown[i].peer = -1;
        relay->routes = grown;
        relay->size = size;
    }
    relay->routes[a] = (struct route){.peer = b, .ended = ended & 1, .moved = 0, .last = 0};
    relay->routes[b] = (struct route){.peer = a, .ended = (ended & 2) != 0, .moved = 0,
                                      .last = 0};
    return 0;
}

/* A new tunnel between a and b, neither direction begun: routed, and both sockets added to
 * the epoll ``epfd`` for reading (as _pump's add registers them). 0, or -errno (nothing
 * routed or added then). */
int nono_relay_add(struct relay *relay, int epfd, int a, int b) {
    if (nono_relay_route(relay, a, b, 0) != 0)
        return -errno;
    struct epoll_event event = {.events = EPOLLIN};
    event.data.fd = a;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, a, &event) == 0) {
        event.data.fd = b;
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, b, &event) == 0)
            return 0;
        int error = errno;
        epoll_ctl(epfd, EPOLL_CTL_DEL, a, NULL);
        errno = error;
    }
    int error = errno;
    relay->routes[a].peer = relay->routes[b].peer = -1;
    return -error;
}

/* Relay the tunnel of ``fd`` no more: its peer, or -1 if it was not routed. ``out``: the bytes
 * moved from fd, from its peer, the last relay's time in nanoseconds, and which directions
 * ended while routed (as ``ended`` of nono_relay_route: bit 0 fd's, bit 1 its peer's). */
int nono_relay_unroute(struct relay *relay, int fd, int64_t *out) {
    if (!routed(relay, fd))
        return -1;
    struct route *mine = &relay->routes[fd];
    int peer = mine->peer;
    struct route *theirs = &relay->routes[peer];
    out[0] = (int64_t)mine->moved;
    out[1] = (int64_t)theirs->moved;
    out[2] = mine->last > theirs->last ? mine->last : theirs->last;
    out[3] = mine->ended | (theirs->ended << 1);
    mine->peer = theirs->peer = -1;
    return peer;
}

/* The last relay's time of the tunnel of ``fd`` in nanoseconds (0: none since it was routed),
 * or -1 if it is not routed. */
int64_t nono_relay_last(const struct relay *relay, int fd) {
    if (!routed(relay, fd))
        return -1;
    const struct route *mine = &relay->routes[fd];
    const struct route *theirs = &relay->routes[mine->peer];
    return mine->last > theirs->last ? mine->last : theirs->last;
}

static void record(int64_t *out, int fd, uint32_t events, int64_t kind, int64_t arg1,
                   int64_t arg2, struct relay *relay) {
    int64_t moved[4] = {0, 0, 0, 0};
    int peer = nono_relay_unroute(relay, fd, moved);
    out[0] = fd;
    out[1] = events;
    out[2] = peer;
    out[3] = moved[0];
    out[4] = moved[1];
    out[5] = moved[2];
    out[6] = moved[3];
    out[7] = kind;
    out[8] = arg1;
    out[9] = arg2;
}

/* A connection from the listening socket ``listener``, non-blocking and close-on-exec, without
 * its peer's address (which nothing here uses: Python's accept formats it for every
 * connection, and a socket made non-blocking after the accept costs a system call more):
 * the new descriptor, or -errno. */
int nono_relay_accept(int listener) {
    int fd;
    do
        fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

/* A readable routed socket: 1 if its message was relayed (or there was none after all), else
 * 0 with the record's kind and arguments set. */
static int relay_one(struct relay *relay, int epfd, int fd, char *buf, int64_t *kind,
                     int64_t *arg1, int64_t *arg2) {
    struct route *route = &relay->routes[fd];
    ssize_t n;
    do
        n = read(fd, buf, COPY_SIZE);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 1; /* reported readable, found empty: wait on, as Python's _move does */
        *kind = ERROR;
        *arg1 = errno;
        return 0;
    }
    if (n == 0) {
        if (relay->routes[route->peer].ended) { /* the tunnel's end: Python's */
            *kind = END_OF_FILE;
            return 0;
        }
        /* Half-close the peer and wait no more on this socket (_pump's _source_ended and
         * _remask): the other direction goes on here. */
        int done;
        do
            done = shutdown(route->peer, SHUT_WR);
        while (done < 0 && errno == EINTR);
        if (done == 0)
            done = epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
        route->ended = 1; /* (an end of file moves no byte: the idle deadline stays) */
        if (done < 0) {
            *kind = ERROR;
            *arg1 = errno;
            return 0;
        }
        return 1;
    }
    if (n == COPY_SIZE) { /* a full read: Python's bulk path decides how it goes on */
        *kind = SPILL;
        *arg1 = n;
        *arg2 = 0;
        return 0;
    }
    ssize_t sent;
    do
        sent = write(route->peer, buf, (size_t)n);
    while (sent < 0 && errno == EINTR);
    if (sent == n) {
        route->moved += (uint64_t)n;
        route->last = now_ns();
        return 1;
    }
    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        *kind = ERROR;
        *arg1 = errno;
        *arg2 = n; /* read, not written */
        return 0;
    }
    *kind = SPILL;
    *arg1 = n;
    *arg2 = sent < 0 ? 0 : sent;
    return 0;
}

/* Wait on ``epfd`` until ``deadline`` or until there is something for Python (see the top of
 * this file): the number of records written to ``out`` (at most ``max_records``, RECORD
 * fields each: fd, events, peer or -1, bytes moved from fd and from its peer while routed,
 * the tunnel's last relay in nanoseconds, the directions that ended while routed, kind, and
 * two arguments), 0 at the deadline, or -errno if epoll_wait failed. ``spill`` holds at
 * least COPY_SIZE bytes. */
int nono_relay_wait(struct relay *relay, int epfd, double deadline, int64_t *out,
                    int max_records, char *spill) {
    struct epoll_event events[MAX_EVENTS];
    int most = max_records < MAX_EVENTS ? max_records : MAX_EVENTS;
    if (most < 1)
        return -EINVAL;
    int64_t until = !(deadline > 0) ? 0 /* (NaN too) */
                    : deadline >= (double)INT64_MAX / 1e9 ? INT64_MAX
                                                           : (int64_t)(deadline * 1e9);
    for (;;) {
        int64_t left = until - now_ns();
        int timeout = 0;
        if (left > 0) {
            int64_t ms = (left + 999999) / 1000000;
            timeout = ms > INT_MAX ? INT_MAX : (int)ms;
        }
        int n = epoll_wait(epfd, events, most, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue; /* as Python retries it (PEP 475), with the time left */
            return -errno;
        }
        /* Python's loop serves the watched descriptors (a new connection's accept, head and
         * connect) before the tunnels' events of the same wait: a request's answer does not
         * wait behind an earlier tunnel's end, whose half-close may wake (and on one CPU
         * let run first) the process at its other end. So with anything for Python in this
         * wait, the routed sockets' events are left in the epoll, which reports them again
         * (level-triggered) at the next wait, after Python's turn; never twice in a row (a
         * tunnel of Python's that is always ready must not starve the routed ones). */
        int defer = 0;
        if (!relay->deferred)
            for (int i = 0; i < n && !defer; i++)
                defer = !routed(relay, events[i].data.fd);
        relay->deferred = 0;
        int count = 0;
        int spilled = 0;
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            uint32_t flags = events[i].events;
            int64_t kind = PLAIN, arg1 = 0, arg2 = 0;
            if (defer && routed(relay, fd)) {
                relay->deferred = 1;
                continue;
            }
            if (routed(relay, fd) && !relay->routes[fd].ended && !spilled &&
                (flags == EPOLLIN ||
                 (flags == (EPOLLIN | EPOLLHUP) && relay->routes[relay->routes[fd].peer].ended)) &&
                relay_one(relay, epfd, fd, spill, &kind, &arg1, &arg2))
                continue;
            spilled |= kind == SPILL;
            record(out + (size_t)count * RECORD, fd, flags, kind, arg1, arg2, relay);
            count++;
        }
        if (count > 0 || timeout == 0)
            return count;
    }
}
