/* nono-reaper's parts (reaper.c: the init; reaper_guard.c: the creation guard). */
#ifndef NONO_REAPER_H
#define NONO_REAPER_H

/* Read the creation guard's configuration from config_fd (closed) and serve listener_fd;
 * -1 if the configuration is unreadable. */
int guard_load(int config_fd, int listener_fd);
/* The listener being served, or -1. */
int guard_listener(void);
/* Answer one notification; -1 when the listener is broken (then call guard_stop). */
int guard_serve_one(void);
void guard_stop(void);

/* nono-reaper --outer (reaper_outer.c): the launcher's outer process, the view guard. */
int outer_main(int argc, char **argv);

#endif
