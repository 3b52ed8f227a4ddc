/* nono-reaper: pid 1 of a session's pid namespace once the program runs.
 *
 * The Python init (nonod/sandbox/_launcher.py) confines itself, starts the program, and
 * then replaces itself with this program (execveat on a sealed memfd the fork server
 * made), so that no Python interpreter stays resident per session. What is left to do is
 * what an init does, plus the launcher's two duties after exec:
 *
 *   argv: nono-reaper PROGRAM_PID EXIT_FD CONTROL_FD SUBREAPER LIFELINE_FD HANDOVER_FD
 *                     [LISTENER_FD CONFIG_FD]
 *
 *   - with HANDOVER_FD (a pid namespace, not -1): stop dying with the outer launcher (its
 *     parent-death signal), then tell it so ("h"): it hands the view guard to the fork server
 *     and exits, and this process is reparented to the fork server (a child subreaper). From
 *     then on the session ends when the fork server does: LIFELINE_FD is a socket whose other
 *     end only the fork server holds, and its hang-up makes this exit (ending the namespace);
 *   - forward SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT to the
 *     program (they arrive blocked: one sent before the exec is pending, not lost);
 *   - reap every child; when the program ends, write its exit record on EXIT_FD
 *     (struct "<BiiI": 3, exit code or -1, signal or 0, 0) and exit, which ends the
 *     namespace;
 *   - answer "C" + port (u16, little endian) on CONTROL_FD: connect to 127.0.0.1:port in
 *     the session's network namespace and send back "K" with the socket, or "E" + errno;
 *   - SUBREAPER "1" (no pid namespace): before reporting, kill and reap every process
 *     reparented to it, as the end of a pid namespace would;
 *   - with LISTENER_FD: serve the creation guard's seccomp notifications (reaper_guard.c),
 *     with what the init prepared, serialized in the memfd CONFIG_FD.
 *
 * It inherits every restriction of the session (Landlock, seccomp, no capabilities,
 * no_new_privs) and holds nothing the program does not already see but the exit pipe and
 * the control socket. It is not dumpable (the memfd is execute-only, and it says so again).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "reaper.h"

#define REC_EXIT 3
#define CONNECT_TIMEOUT_MS 5000

static const int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM,
                                SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};

static void report_exit(int fd, int status) {
    unsigned char rec[13];
    int32_t code = 0, sig = 0;
    if (WIFSIGNALED(status)) {
        code = -1;
        sig = WTERMSIG(status);
    } else {
        code = WEXITSTATUS(status);
    }
    rec[0] = REC_EXIT;
    put32(rec + 1, (uint32_t)code);
    put32(rec + 5, (uint32_t)sig);
    put32(rec + 9, 0);
    write_all(fd, rec, sizeof rec);
}

static int send_reply(int chan, const char *tag, size_t len, int fd) {
    struct iovec iov = {.iov_base = (void *)tag, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&u, 0, sizeof u);
        msg.msg_control = u.buf;
        msg.msg_controllen = sizeof u.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    while (sendmsg(chan, &msg, MSG_NOSIGNAL) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return 0;
}

/* The daemon's connect request under way: at most one (the daemon waits for each answer),
 * waited for in the init's loop with everything else, so that a listener that accepts
 * nothing holds up nothing but the daemon's request. */
struct pending {
    int chan, sock, ep;
    struct timespec deadline;
};

static int64_t ms_until(const struct timespec *t) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ms = (int64_t)(t->tv_sec - now.tv_sec) * 1000 + (t->tv_nsec - now.tv_nsec) / 1000000;
    return ms < 0 ? 0 : ms;
}

/* Answer the request: the connected socket ("K"), or "E" + errno; 0 when the channel is gone.
 * A pass the kernel refuses for the user's descriptors in flight (ETOOMANYREFS: another
 * session of the user holds its limit's worth, and we run under the program's limit) fails
 * this request only, as the Python init's _launcher._answer does; the channel stays. */
static int reply(int chan, int sock, int err) {
    if (!err) {
        if (send_reply(chan, "K", 1, sock) == 0)
            return 1;
        if (errno != ETOOMANYREFS)
            return 0;
        err = ETOOMANYREFS;
    }
    unsigned char msg[5] = {'E'};
    put32(msg + 1, (uint32_t)err);
    return send_reply(chan, (const char *)msg, sizeof msg, -1) == 0;
}

/* End the connection under way (err: 0 to ask the socket how it went); the channel's return. */
static int finish(struct pending *p, int err) {
    socklen_t len = sizeof err;
    if (!err && getsockopt(p->sock, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    epoll_ctl(p->ep, EPOLL_CTL_DEL, p->sock, NULL);
    int ok = reply(p->chan, p->sock, err);
    close(p->sock);
    p->sock = -1;
    return ok;
}

/* One request from the daemon: answered, or its connection left under way in p; 0 when the
 * channel is gone. */
static int answer(struct pending *p, uint32_t index) {
    unsigned char msg[64];
    ssize_t n;
    while ((n = recv(p->chan, msg, sizeof msg, 0)) < 0 && errno == EINTR)
        ;
    if (n <= 0)
        return 0;
    if (n != 3 || msg[0] != 'C')
        return 1;
    unsigned port = (unsigned)msg[1] | ((unsigned)msg[2] << 8);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0)
        return reply(p->chan, -1, errno);
    int err = connect(s, (struct sockaddr *)&addr, sizeof addr) < 0 ? errno : 0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = index};
    if (err == EINPROGRESS && epoll_ctl(p->ep, EPOLL_CTL_ADD, s, &ev) == 0) {
        p->sock = s;
        clock_gettime(CLOCK_MONOTONIC, &p->deadline);
        p->deadline.tv_sec += CONNECT_TIMEOUT_MS / 1000;
        return 1;
    }
    int ok = reply(p->chan, s, err);
    close(s);
    return ok;
}

/* The init's life once the program runs (see the top of this file): forward, reap, answer,
 * report the program's exit on EXIT_FD and exit. */
_Noreturn void serve_init(pid_t program, int exit_fd, int control, int subreaper, int lifeline) {
    if (guard_listener() >= 0)
        guard_program(program); /* the domain the guard emulates for */
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++)
        sigaddset(&set, forwarded[i]);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0)
        _exit(126);

    /* epoll, not poll: poll refuses more descriptors than RLIMIT_NOFILE, which the program
     * may lower for this process (prlimit, same uid): the loop then spun, answering nothing
     * and never seeing the lifeline's hang-up. What is registered here stays registered. */
    enum { SIGNALS, CONTROL, LISTENER, LIFELINE, CONNECTING, WATCHED };
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        _exit(126);
    int fds[LIFELINE + 1] = {sfd, control, guard_listener(), lifeline};
    for (int i = 0; i <= LIFELINE; i++) {
        /* the lifeline: hang-up only (always reported); the fork server's messages are not ours */
        struct epoll_event ev = {.events = i == LIFELINE ? 0 : EPOLLIN, .data.u32 = (uint32_t)i};
        if (fds[i] >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0)
            _exit(126);
    }
    struct pending conn = {.chan = control, .sock = -1, .ep = ep};
    uint32_t chan_events = EPOLLIN;
    int status = 0xFF00;
    for (;;) {
        pid_t pid;
        int st, done = 0;
        while ((pid = waitpid(-1, &st, WNOHANG)) != 0) {
            if (pid < 0) {
                if (errno == EINTR)
                    continue;
                done = 1; /* no child left */
                break;
            }
            if (pid == program) {
                status = st;
                done = 1;
                break;
            }
        }
        if (done)
            break;
        struct epoll_event evs[WATCHED];
        uint32_t revents[WATCHED] = {0};
        int n = epoll_wait(ep, evs, WATCHED, conn.sock >= 0 ? (int)ms_until(&conn.deadline) : -1);
        for (int i = 0; i < n; i++)
            revents[evs[i].data.u32] = evs[i].events;
        if (revents[LIFELINE] & (EPOLLHUP | EPOLLERR))
            _exit(0); /* the fork server is gone: so is the session (the namespace ends) */
        if (revents[SIGNALS] & EPOLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si && si.ssi_signo != SIGCHLD)
                kill(program, (int)si.ssi_signo);
        }
        /* While a connection is under way the channel is watched for its hang-up only: the
         * daemon sends nothing before its answer. */
        int chan_ok = 1;
        if (conn.sock >= 0 && (revents[CONTROL] & (EPOLLHUP | EPOLLERR)))
            chan_ok = 0;
        else if (conn.sock >= 0 && (revents[CONNECTING] || ms_until(&conn.deadline) == 0))
            chan_ok = finish(&conn, revents[CONNECTING] ? 0 : ETIMEDOUT);
        else if (conn.sock < 0 && revents[CONTROL])
            chan_ok = answer(&conn, CONNECTING);
        if (!chan_ok) { /* the daemon went away */
            if (conn.sock >= 0)
                finish(&conn, ECONNABORTED);
            epoll_ctl(ep, EPOLL_CTL_DEL, fds[CONTROL], NULL);
            fds[CONTROL] = -1;
        } else if (fds[CONTROL] >= 0 && (conn.sock >= 0) != (chan_events == 0)) {
            struct epoll_event ev = {.events = conn.sock >= 0 ? 0 : EPOLLIN, .data.u32 = CONTROL};
            chan_events = ev.events;
            epoll_ctl(ep, EPOLL_CTL_MOD, fds[CONTROL], &ev);
        }
        if (revents[LISTENER] && guard_serve_one() < 0) {
            epoll_ctl(ep, EPOLL_CTL_DEL, fds[LISTENER], NULL);
            guard_stop();
        }
    }
    if (subreaper)
        end_descendants();
    report_exit(exit_fd, status);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--outer"))
        return outer_main(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--repair"))
        return repair_main(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--init"))
        return init_main(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--spawner"))
        return spawner_main(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--exec"))
        return exec_main(argc, argv);
    long program, exit_fd, control, subreaper, lifeline, handover, listener = -1, config = -1;
    prctl(PR_SET_DUMPABLE, 0);
    prctl(PR_SET_NAME, "nono-reaper"); /* not "6", the memfd's number */
    if ((argc != 7 && argc != 9) || number(argv[1], &program) || number(argv[2], &exit_fd) ||
        number(argv[3], &control) || number(argv[4], &subreaper) ||
        number(argv[5], &lifeline) || number(argv[6], &handover) ||
        (argc == 9 && (number(argv[7], &listener) || number(argv[8], &config))))
        return 126;
    if (listener >= 0 && guard_load((int)config, (int)listener) < 0)
        return 126; /* the program would wait for answers nobody gives: end the session */
    if (handover >= 0) {
        /* The outer launcher leaves once it hears this: its death must not be ours. A fork
         * server that dies from now on hangs the lifeline up (watched in serve_init). */
        prctl(PR_SET_PDEATHSIG, 0);
        send((int)handover, "h", 1, MSG_NOSIGNAL);
        close((int)handover);
    }

    serve_init((pid_t)program, (int)exit_fd, (int)control, (int)subreaper, (int)lifeline);
}
