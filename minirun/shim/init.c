/*
 * minirun-init: the PID 1 of `minirun run --init` (what tini is to `docker run --init`).
 *
 *   /dev/init -- CMD ARGS...
 *
 * A PID 1 has two jobs a normal program does not do: reap orphaned children (or they stay
 * zombies forever), and pass on signals (the kernel drops signals a PID 1 has no handler
 * for, so `minirun stop` would always wait for the SIGKILL). It runs CMD as its child,
 * forwards every catchable signal to it, reaps everything, and exits with CMD's status
 * (128+N if CMD was killed by signal N). Built static: it runs inside any image.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int first = 1;
	if (argc > 1 && strcmp(argv[1], "--") == 0)
		first = 2;
	if (first >= argc) {
		fprintf(stderr, "usage: %s -- CMD [ARGS...]\n", argv[0]);
		return 2;
	}
	sigset_t all, old;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);

	pid_t child = fork();
	if (child < 0) {
		perror("minirun-init: fork");
		return 125;
	}
	if (child == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		setpgid(0, 0);
		execvp(argv[first], argv + first);
		fprintf(stderr, "minirun-init: exec %s: %s\n", argv[first], strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}
	for (;;) {
		siginfo_t info;
		struct timespec tick = {.tv_sec = 1, .tv_nsec = 0};
		int sig = sigtimedwait(&all, &info, &tick);
		if (sig > 0 && sig != SIGCHLD) {
			/* the whole process group of CMD, so a shell's children hear it too */
			if (kill(-child, sig) < 0)
				kill(child, sig);
		}
		for (;;) {
			int status;
			pid_t w = waitpid(-1, &status, WNOHANG);
			if (w <= 0)
				break;
			if (w == child)
				return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		}
	}
}
