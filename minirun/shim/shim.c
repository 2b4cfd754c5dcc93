/*
 * minirun-shim: the small process that watches a detached container (what conmon is to
 * Podman). minirun's Python monitor starts the container, then exec()s this program in
 * its place: exec keeps the pid, so the container init stays OUR child and we can
 * waitpid() it for its real exit status, while the host pays a few hundred KiB per
 * container instead of a Python interpreter's ~10 MiB.
 *
 *   minirun-shim [-S SOCKET] [-r FD] [-i FD] [-o] [-t] [-w MS]
 *                PID EXITFILE LOGFILE OUTFD ERRFD [-- CMD ARGS...]
 *
 * It copies the container's stdout/stderr pipes (ERRFD may be -1, e.g. for a tty) into
 * LOGFILE in the CRI log format that Podman's k8s-file driver also writes, one record a
 * line:  "2026-01-01T00:00:00.123456789Z stdout F hello"  (P = partial line). When the
 * container exits it writes EXITFILE atomically ("<status> <unix-ns>\n", status Docker's:
 * code, or 128+N for signal N) and then exec()s CMD, if given: minirun's cleanup, which
 * records the exit, releases the network and, for --rm, removes the container.
 *
 * Attach (`minirun attach`, `start -a`): with -S it listens on the unix socket SOCKET
 * (mode 0600; bound through /proc/self/fd/DIRFD/NAME, so a store root longer than
 * sun_path's 108 bytes works) and copies the container's output to every client as well
 * as to the log. Every message, both ways, is a frame with Docker's stdcopy header:
 * 8 bytes [type, 0, 0, 0, length as big-endian u32] and then `length` bytes.
 *   shim -> client: 1 stdout, 2 stderr (a tty's output is all 1), 3 the exit status
 *                   (decimal text), sent after the last output, before CMD runs.
 *   client -> shim: 0 input for the container's stdin, 1 the client's stdin reached EOF,
 *                   2 resize (rows, cols: two big-endian u16) -> TIOCSWINSZ on the master.
 * -i FD: where input goes: the write end of the container's stdin pipe (run -i) or the
 * pty master (-t; then also give -t). Without -i input is dropped (Docker: no -i, no
 * stdin). -o: Docker's StdinOnce (an attached `run -i`/`start -ai`): a client's EOF
 * closes the container's stdin pipe; without it (`run -di`) stdin stays open for the
 * next client, and a tty's never closes. -w MS: wait up to MS for the first client
 * before copying any output (start -a: nothing is missed). -r FD: write "OK" to FD and
 * close it once the socket listens (the CLI returns then, so a client can connect).
 * A client that does not read blocks the container's output past 1 MiB (as a slow
 * Docker attach does); a client that sends a malformed frame is dropped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 16384
#define MAX_CLIENTS 32
#define OUT_CAP (1 << 20) /* past this a client's backlog pauses the container's output */
#define FRAME_MAX 65536	  /* the largest frame a client may send */

enum { C_STDIN = 0, C_EOF = 1, C_RESIZE = 2 };	 /* client -> shim */
enum { S_STDOUT = 1, S_STDERR = 2, S_EXIT = 3 }; /* shim -> client */

struct buf {
	char *p;
	size_t len, cap;
};

struct stream {
	int fd;
	const char *name;
	int type;
	char buf[LINE_MAX_BYTES];
	size_t len;
};

struct client {
	int fd;
	struct buf in, out;
};

static int log_fd = -1;
static struct client clients[MAX_CLIENTS];
static int nclients;
static int in_fd = -1;	   /* the container's stdin: pipe write end or pty master */
static int master_fd = -1; /* with -t */
static int stdin_once;
static int stdin_eof; /* close in_fd once the pending input is written */
static struct buf pending;

static int buf_add(struct buf *b, const void *d, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
	return 0;
}

static void buf_drop(struct buf *b, size_t n)
{
	memmove(b->p, b->p + n, b->len - n);
	b->len -= n;
}

static void buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

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

/* --- attached clients ------------------------------------------------------------------ */

static void drop_client(int i)
{
	close(clients[i].fd);
	buf_free(&clients[i].in);
	buf_free(&clients[i].out);
	clients[i] = clients[--nclients];
}

/* Write what a client can take now; -1 if it is gone. */
static int flush_client(struct client *c)
{
	while (c->out.len) {
		ssize_t w = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
		}
		buf_drop(&c->out, (size_t)w);
	}
	return 0;
}

static void frame(struct buf *b, int type, const char *data, size_t n)
{
	unsigned char head[8] = {(unsigned char)type, 0, 0, 0, (unsigned char)(n >> 24),
				 (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n};
	buf_add(b, head, sizeof head);
	buf_add(b, data, n);
}

static void broadcast(int type, const char *data, size_t n)
{
	for (int i = 0; i < nclients; i++) {
		frame(&clients[i].out, type, data, n);
		if (flush_client(&clients[i]) < 0)
			drop_client(i--);
	}
}

static int backlogged(void)
{
	for (int i = 0; i < nclients; i++)
		if (clients[i].out.len > OUT_CAP)
			return 1;
	return 0;
}

static void accept_client(int listen_fd)
{
	int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	if (nclients == MAX_CLIENTS) {
		close(fd);
		return;
	}
	memset(&clients[nclients], 0, sizeof clients[nclients]);
	clients[nclients++].fd = fd;
}

static void close_stdin(void)
{
	if (in_fd >= 0 && in_fd != master_fd)
		close(in_fd);
	in_fd = -1;
	buf_free(&pending);
}

static void flush_stdin(void)
{
	while (in_fd >= 0 && pending.len) {
		ssize_t w = write(in_fd, pending.p, pending.len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			if (in_fd == master_fd) { /* EIO: the tty's other side is gone */
				buf_free(&pending);
				return;
			}
			close_stdin(); /* EPIPE: the container closed its stdin */
			return;
		}
		buf_drop(&pending, (size_t)w);
	}
	if (stdin_eof && !pending.len)
		close_stdin();
}

/* The frames a client sent; 0 to drop it (malformed). */
static int handle_input(struct client *c)
{
	while (c->in.len >= 8) {
		const unsigned char *h = (const unsigned char *)c->in.p;
		uint32_t n = ((uint32_t)h[4] << 24) | ((uint32_t)h[5] << 16) | ((uint32_t)h[6] << 8) | h[7];
		if (n > FRAME_MAX || h[1] || h[2] || h[3] || h[0] > C_RESIZE)
			return 0;
		if (c->in.len < 8 + (size_t)n)
			break;
		const char *payload = c->in.p + 8;
		if (h[0] == C_STDIN && in_fd >= 0 && !stdin_eof)
			buf_add(&pending, payload, n);
		else if (h[0] == C_EOF && stdin_once && master_fd < 0 && in_fd >= 0)
			stdin_eof = 1;
		else if (h[0] == C_RESIZE && master_fd >= 0 && n == 4) {
			const unsigned char *p = (const unsigned char *)payload;
			struct winsize ws = {.ws_row = (unsigned short)((p[0] << 8) | p[1]),
					     .ws_col = (unsigned short)((p[2] << 8) | p[3])};
			if (ws.ws_row && ws.ws_col)
				ioctl(master_fd, TIOCSWINSZ, &ws);
		}
		buf_drop(&c->in, 8 + (size_t)n);
	}
	flush_stdin();
	return 1;
}

/* Read from a client; 0 when it is gone or misbehaved. */
static int read_client(struct client *c)
{
	char chunk[8192];
	ssize_t r = recv(c->fd, chunk, sizeof chunk, MSG_DONTWAIT);
	if (r < 0)
		return errno == EINTR || errno == EAGAIN;
	if (r == 0)
		return 0; /* detached (or died): the container runs on */
	buf_add(&c->in, chunk, (size_t)r);
	return handle_input(c);
}

/* A socket in DIR bound through /proc/self/fd/N/NAME: sun_path holds 108 bytes, a store
 * root may be longer. Returns the listening fd, or -1. */
static int listen_at(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	const char *name = slash ? slash + 1 : path;
	size_t dlen = slash ? (size_t)(slash - path) : 0;
	if (dlen >= sizeof dir || strlen(name) > 64)
		return -1;
	memcpy(dir, path, dlen);
	dir[dlen] = 0;
	int dfd = open(dlen ? dir : (slash ? "/" : "."), O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	unlinkat(dfd, name, 0); /* an earlier run's */
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/%s", dfd, name);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		mode_t old = umask(0177); /* 0600: only root attaches */
		int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 16) == 0;
		umask(old);
		if (!ok) {
			close(fd);
			fd = -1;
		}
	}
	close(dfd);
	return fd;
}

/* --- the container's output ------------------------------------------------------------ */

static void deliver(struct stream *s, const char *data, size_t n)
{
	feed(s, data, n);
	broadcast(s->type, data, n);
}

static int pump(struct stream *s)
{
	char chunk[8192];
	ssize_t r = read(s->fd, chunk, sizeof chunk);
	if (r > 0) {
		deliver(s, chunk, (size_t)r);
		return 1;
	}
	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return 1;
	/* EOF, or EIO from a pty master whose slave side is gone */
	if (s->len) {
		emit(s, s->buf, s->len, 'P');
		s->len = 0;
	}
	if (s->fd == master_fd)
		master_fd = in_fd = -1;
	close(s->fd);
	s->fd = -1;
	return 0;
}

static void write_exit(const char *path, int code)
{
	char tmp[4096];
	char line[64];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
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

/* The exit status to every client, then what they still have to read, for up to 5 s. */
static void goodbye(int code)
{
	char text[16];
	int n = snprintf(text, sizeof text, "%d", code);
	broadcast(S_EXIT, text, (size_t)n);
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		struct pollfd fds[MAX_CLIENTS];
		int k = 0;
		for (int i = 0; i < nclients; i++)
			if (clients[i].out.len) {
				fds[k].fd = clients[i].fd;
				fds[k++].events = POLLOUT;
			}
		clock_gettime(CLOCK_MONOTONIC, &now);
		long left = 5000 - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
		if (!k || left <= 0)
			break;
		if (poll(fds, (nfds_t)k, (int)left) < 0 && errno != EINTR)
			break;
		for (int i = 0; i < nclients; i++)
			if (clients[i].out.len && flush_client(&clients[i]) < 0)
				buf_free(&clients[i].out);
	}
	while (nclients)
		drop_client(0);
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [-S SOCKET] [-r FD] [-i FD] [-o] [-t] [-w MS] "
			"PID EXITFILE LOGFILE OUTFD ERRFD [-- CMD...]\n", argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *sock_path = NULL;
	int ready_fd = -1, tty = 0, wait_ms = 0;
	int opt;
	while ((opt = getopt(argc, argv, "+S:r:i:otw:")) != -1) {
		switch (opt) {
		case 'S': sock_path = optarg; break;
		case 'r': ready_fd = atoi(optarg); break;
		case 'i': in_fd = atoi(optarg); break;
		case 'o': stdin_once = 1; break;
		case 't': tty = 1; break;
		case 'w': wait_ms = atoi(optarg); break;
		default: usage(argv[0]);
		}
	}
	argc -= optind - 1;
	argv += optind - 1;
	if (argc < 6)
		usage(argv[0]);
	pid_t pid = (pid_t)atoi(argv[1]);
	const char *exit_path = argv[2];
	struct stream streams[2] = {
		{.fd = atoi(argv[4]), .name = "stdout", .type = S_STDOUT},
		{.fd = atoi(argv[5]), .name = "stderr", .type = S_STDERR},
	};
	char **then = NULL;
	if (argc > 7 && strcmp(argv[6], "--") == 0)
		then = argv + 7;
	if (tty)
		master_fd = streams[0].fd;
	if (in_fd >= 0) {
		fcntl(in_fd, F_SETFD, FD_CLOEXEC);
		fcntl(in_fd, F_SETFL, fcntl(in_fd, F_GETFL) | O_NONBLOCK);
	}

	/* Nobody reads our own stdio; signals meant for the container go to it directly. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	log_fd = open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	int listen_fd = sock_path ? listen_at(sock_path) : -1;
	if (ready_fd >= 0) {
		write_all(ready_fd, "OK", 2);
		close(ready_fd);
	}
	if (listen_fd >= 0 && wait_ms > 0) {
		struct pollfd w = {.fd = listen_fd, .events = POLLIN};
		if (poll(&w, 1, wait_ms) > 0)
			accept_client(listen_fd);
	}

	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	int status = 0;
	int exited = 0;
	enum { K_STREAM, K_PID, K_LISTEN, K_CLIENT, K_STDIN };
	while (!exited) {
		struct pollfd fds[6 + MAX_CLIENTS];
		int kind[6 + MAX_CLIENTS], which[6 + MAX_CLIENTS];
		int n = 0;
		int paused = backlogged();
		for (int i = 0; i < 2; i++)
			if (streams[i].fd >= 0 && !paused) {
				fds[n] = (struct pollfd){.fd = streams[i].fd, .events = POLLIN};
				kind[n] = K_STREAM;
				which[n++] = i;
			}
		if (pidfd >= 0) {
			fds[n] = (struct pollfd){.fd = pidfd, .events = POLLIN};
			kind[n++] = K_PID;
		}
		if (listen_fd >= 0 && nclients < MAX_CLIENTS) {
			fds[n] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
			kind[n++] = K_LISTEN;
		}
		if (in_fd >= 0 && pending.len) {
			fds[n] = (struct pollfd){.fd = in_fd, .events = POLLOUT};
			kind[n++] = K_STDIN;
		}
		for (int i = 0; i < nclients; i++) {
			short ev = (short)((pending.len < OUT_CAP ? POLLIN : 0) | (clients[i].out.len ? POLLOUT : 0));
			fds[n] = (struct pollfd){.fd = clients[i].fd, .events = ev};
			kind[n] = K_CLIENT;
			which[n++] = clients[i].fd; /* by fd: the array is compacted as clients go */
		}
		int r = poll(fds, (nfds_t)n, pidfd >= 0 ? -1 : 200);
		if (r < 0 && errno != EINTR)
			break;
		int pid_ready = 0;
		for (int k = 0; k < n && r > 0; k++) {
			short re = fds[k].revents;
			if (!re)
				continue;
			switch (kind[k]) {
			case K_STREAM:
				if (streams[which[k]].fd >= 0)
					pump(&streams[which[k]]);
				break;
			case K_PID:
				pid_ready = 1;
				break;
			case K_LISTEN:
				accept_client(listen_fd);
				break;
			case K_STDIN:
				flush_stdin();
				break;
			case K_CLIENT:
				for (int i = 0; i < nclients; i++) {
					if (clients[i].fd != which[k])
						continue;
					int ok = 1;
					if (re & POLLOUT)
						ok = flush_client(&clients[i]) == 0;
					if (ok && (re & (POLLIN | POLLHUP | POLLERR)))
						ok = read_client(&clients[i]);
					if (!ok)
						drop_client(i);
					break;
				}
				break;
			}
		}
		/* Without pidfd (old kernels) fall back to polling waitpid. */
		if (pidfd < 0 || pid_ready) {
			pid_t w = waitpid(pid, &status, pidfd >= 0 ? 0 : WNOHANG);
			if (w == pid || (w < 0 && errno == ECHILD))
				exited = 1;
		}
	}
	/* No new clients; those attached get the rest of the output and the status. */
	if (listen_fd >= 0) {
		close(listen_fd);
		unlink(sock_path);
	}
	close_stdin();
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
				deliver(&streams[i], chunk, (size_t)r);
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
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	write_exit(exit_path, code);
	goodbye(code);
	if (log_fd >= 0)
		close(log_fd);
	if (then) {
		execvp(then[0], then);
		perror("minirun-shim: exec cleanup");
		return 1;
	}
	return 0;
}
