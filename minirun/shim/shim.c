/*
 * minirun-shim: the small process that watches a detached container (what conmon is to
 * Podman). minirun's Python monitor starts the container, then exec()s this program in
 * its place: exec keeps the pid, so the container init stays OUR child and we can
 * waitpid() it for its real exit status, while the host pays a few hundred KiB per
 * container instead of a Python interpreter's ~10 MiB.
 *
 *   minirun-shim PID EXITFILE LOGFILE OUTFD ERRFD [-- CMD ARGS...]
 *
 * It copies the container's stdout/stderr pipes (ERRFD may be -1, e.g. for a tty) into
 * LOGFILE in the CRI log format that Podman's k8s-file driver also writes, one record a
 * line:  "2026-01-01T00:00:00.123456789Z stdout F hello"  (P = partial line). When the
 * container exits it writes EXITFILE atomically ("<status> <unix-ns>\n", status Docker's:
 * code, or 128+N for signal N) and then exec()s CMD, if given: minirun's cleanup, which
 * records the exit, releases the network and, for --rm, removes the container.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 16384

struct stream {
	int fd;
	const char *name;
	char buf[LINE_MAX_BYTES];
	size_t len;
};

static int log_fd = -1;

static void stamp(char *out, size_t n)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + k, n - k, ".%09ldZ", ts.tv_nsec);
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return; /* a full disk must not stop us from recording the exit */
		}
		p += w;
		n -= (size_t)w;
	}
}

static void emit(struct stream *s, const char *text, size_t n, char tag)
{
	char head[96];
	char ts[64];
	stamp(ts, sizeof ts);
	int h = snprintf(head, sizeof head, "%s %s %c ", ts, s->name, tag);
	/* one write per record, so `logs -f` never sees half a header */
	char *rec = malloc((size_t)h + n + 1);
	if (!rec)
		return;
	memcpy(rec, head, (size_t)h);
	memcpy(rec + h, text, n);
	rec[(size_t)h + n] = '\n';
	write_all(log_fd, rec, (size_t)h + n + 1);
	free(rec);
}

/* Split what arrived into full lines (F); a line longer than the buffer goes out as P. */
static void feed(struct stream *s, const char *data, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = data[i];
		if (c == '\n') {
			emit(s, s->buf, s->len, 'F');
			s->len = 0;
		} else {
			if (s->len == sizeof s->buf) {
				emit(s, s->buf, s->len, 'P');
				s->len = 0;
			}
			s->buf[s->len++] = c;
		}
	}
}

static int pump(struct stream *s)
{
	char chunk[8192];
	ssize_t r = read(s->fd, chunk, sizeof chunk);
	if (r > 0) {
		feed(s, chunk, (size_t)r);
		return 1;
	}
	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return 1;
	/* EOF, or EIO from a pty master whose slave side is gone */
	if (s->len) {
		emit(s, s->buf, s->len, 'P');
		s->len = 0;
	}
	close(s->fd);
	s->fd = -1;
	return 0;
}

static void write_exit(const char *path, int status)
{
	char tmp[4096];
	char line[64];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	int n = snprintf(line, sizeof line, "%d %lld\n", code,
			 (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	write_all(fd, line, (size_t)n);
	fsync(fd);
	close(fd);
	rename(tmp, path);
}

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: %s PID EXITFILE LOGFILE OUTFD ERRFD [-- CMD...]\n", argv[0]);
		return 2;
	}
	pid_t pid = (pid_t)atoi(argv[1]);
	const char *exit_path = argv[2];
	struct stream streams[2] = {
		{.fd = atoi(argv[4]), .name = "stdout"},
		{.fd = atoi(argv[5]), .name = "stderr"},
	};
	char **then = NULL;
	if (argc > 7 && strcmp(argv[6], "--") == 0)
		then = argv + 7;

	/* Nobody reads our own stdio; signals meant for the container go to it directly. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	log_fd = open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);

	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	int status = 0;
	int exited = 0;
	while (!exited) {
		struct pollfd fds[3];
		int n = 0, idx[3];
		for (int i = 0; i < 2; i++)
			if (streams[i].fd >= 0) {
				fds[n].fd = streams[i].fd;
				fds[n].events = POLLIN;
				idx[n++] = i;
			}
		int pid_slot = -1;
		if (pidfd >= 0) {
			pid_slot = n;
			fds[n].fd = pidfd;
			fds[n].events = POLLIN;
			idx[n++] = -1;
		}
		int r = poll(fds, (nfds_t)n, pidfd >= 0 ? -1 : 200);
		if (r < 0 && errno != EINTR)
			break;
		for (int k = 0; k < n && r > 0; k++) {
			if (k == pid_slot || !(fds[k].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			pump(&streams[idx[k]]);
		}
		/* Without pidfd (old kernels) fall back to polling waitpid. */
		if (pidfd < 0 || (pid_slot >= 0 && (fds[pid_slot].revents & POLLIN))) {
			pid_t w = waitpid(pid, &status, pidfd >= 0 ? 0 : WNOHANG);
			if (w == pid || (w < 0 && errno == ECHILD))
				exited = 1;
		}
	}
	/* Drain what the container wrote last; its PID namespace is gone, so the pipes close. */
	for (int i = 0; i < 2; i++) {
		if (streams[i].fd < 0)
			continue;
		int fl = fcntl(streams[i].fd, F_GETFL);
		fcntl(streams[i].fd, F_SETFL, fl | O_NONBLOCK);
		for (int spins = 0; streams[i].fd >= 0 && spins < 10000; spins++) {
			char chunk[8192];
			ssize_t r = read(streams[i].fd, chunk, sizeof chunk);
			if (r > 0) {
				feed(&streams[i], chunk, (size_t)r);
				continue;
			}
			if (streams[i].len) {
				emit(&streams[i], streams[i].buf, streams[i].len, 'P');
				streams[i].len = 0;
			}
			close(streams[i].fd);
			streams[i].fd = -1;
		}
	}
	write_exit(exit_path, status);
	if (log_fd >= 0)
		close(log_fd);
	if (then) {
		execvp(then[0], then);
		perror("minirun-shim: exec cleanup");
		return 1;
	}
	return 0;
}
