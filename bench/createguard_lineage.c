/* The C init's half of bench/createguard_lineage.py: CPU time of reaper_guard.c's known()
 * per call, for the deepest of a chain of DEPTH processes below this one (which stands for
 * the program), with one unrelated process marked confined, and with nothing marked.
 *
 *   cc -O2 -o /tmp/lineage bench/createguard_lineage.c nonod/sandbox/reaper_util.c
 *   /tmp/lineage [CALLS [DEPTH...]]
 *
 * It includes reaper_guard.c whole (its functions are static), so it measures the code the
 * reaper runs; the main() of reaper.c is not linked. */
#define main reaper_guard_unused_main
#include "../nonod/sandbox/reaper_guard.c"
#undef main
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

/* The last of depth processes, each the child of the one before (this one for 0); they wait
 * on the pipe *hold until it is closed. */
static pid_t chain(int depth, int *hold, pid_t *first) {
    int p[2], ready[2];
    *first = -1;
    *hold = -1;
    if (depth == 0)
        return getpid();
    if (pipe(p) < 0 || pipe(ready) < 0)
        exit(1);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[1]);
        close(ready[0]);
        int last = 1;
        for (int i = 1; i < depth; i++)
            if (fork() != 0) {
                last = 0;
                break;
            }
        if (last) {
            pid_t me = getpid();
            if (write(ready[1], &me, sizeof me) != sizeof me)
                _exit(1);
        }
        char c;
        while (read(p[0], &c, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(p[0]);
    close(ready[1]);
    pid_t last;
    if (read(ready[0], &last, sizeof last) != sizeof last)
        exit(1);
    close(ready[0]);
    *hold = p[1];
    *first = pid;
    return last;
}

static void unchain(int hold, pid_t first) {
    if (hold >= 0) {
        close(hold);
        waitpid(first, NULL, 0);
    }
}

static double per_call(pid_t tid, int calls, int expect) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    for (int i = 0; i < calls; i++)
        if (known(tid) != expect)
            exit(2);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / calls / 1000;
}

int main(int argc, char **argv) {
    int calls = argc > 1 ? atoi(argv[1]) : 20000, hold;
    pid_t first;
    guard_program(getpid());
    init_pid = -1; /* this process stands for the program, not for the init */
    printf("us of CPU per known() call, %d calls\n", calls);
    printf("%-20s %8.2f\n", "nothing marked", per_call(getpid(), calls, 1));
    pid_t marked = chain(1, &hold, &first);
    mark(&confined, marked, 0);
    static const int usual[] = {0, 1, 3, 10};
    int depths[64], n = 0;
    for (int i = 2; i < argc && n < 64; i++) /* review24: the depths asked for, if any */
        depths[n++] = atoi(argv[i]);
    if (!n)
        for (; n < 4; n++)
            depths[n] = usual[n];
    for (int i = 0; i < n; i++) {
        int h;
        pid_t f, tid = chain(depths[i], &h, &f);
        printf("marked, depth %-6d %8.2f\n", depths[i], per_call(tid, calls, depths[i] < MAX_CHAIN));
        unchain(h, f);
    }
    /* and with both tables full (pids nobody has), as a tool that nests thousands would */
    for (size_t k = confined.n; k < MAX_MARKS; k++)
        confined.v[k] = subreapers.v[k] = (struct proc){(pid_t)(0x3FFFFFFF - k), 1};
    confined.n = subreapers.n = MAX_MARKS;
    for (int i = 0; i < n; i++) {
        int h;
        pid_t f, tid = chain(depths[i], &h, &f);
        printf("full, depth %-8d %8.2f\n", depths[i], per_call(tid, calls, depths[i] < MAX_CHAIN));
        unchain(h, f);
    }
    unchain(hold, first);
    return 0;
}
