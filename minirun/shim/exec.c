/*
 * minirun-exec: the last step of every container process, and why it exists.
 *
 * The runtime sets a container up in a forked Python process, which is the host's
 * python binary. If that process execve()d the container's command itself, a command
 * that is a script starting "#!/proc/self/exe" would run the HOST's python inside the
 * container, and the container could then open that binary through /proc/PID/exe and
 * write to it once it stops running (CVE-2019-5736, the runc breakout). So the runtime
 * never execs the command itself: it copies this program into a sealed memfd (no write,
 * no resize: the seals cannot be undone) and execs the memfd. Now /proc/self/exe is the
 * sealed copy, and this program execs the command. A "#!/proc/self/exe" script gets this
 * program as its interpreter, which refuses to run unless called by the runtime.
 *
 *   minirun-exec\1 SYNC_FD STDERR SECCOMP_FD SECCOMP_FLAGS PATH ARGV0 ARGS...
 *
 * SYNC_FD: the runtime's sync pipe (or -1): on failure "X<errno>\0<argv0>" is written to
 * it. STDERR: 1 if the failure is also reported on stderr (after "created", nobody may
 * read the sync pipe). SECCOMP_FD: a pipe carrying a BPF program (or -1), installed right
 * before execve with SECCOMP_FLAGS (the container's profile then only has to allow
 * execve). Built static: it runs inside any image's root.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <fcntl.h>

#define MAGIC "minirun-exec\1"
#define MAX_BPF (4096 * sizeof(struct sock_filter))

static void report(int sync, int to_stderr, int err, const char *path, const char *argv0)
{
	char buf[4200];
	signal(SIGPIPE, SIG_IGN); /* the runtime may be gone (after create) */
	if (sync >= 0) {
		int n = snprintf(buf, sizeof(buf), "X%d", err);
		size_t len = (size_t)n + 1 + strlen(argv0);
		if (n > 0 && len < sizeof(buf)) {
			memcpy(buf + n + 1, argv0, strlen(argv0));
			if (write(sync, buf, len) < 0) {
				/* nobody listening: stderr below is the report */
			}
		}
	}
	if (to_stderr) {
		/* Go's wording, as runc prints it: "exec /x: exec format error" */
		int n = snprintf(buf, sizeof(buf), "exec %s: %s\n", path, strerror(err));
		size_t at = strlen(path) + 7;
		if (n > 0 && (size_t)n > at && buf[at] >= 'A' && buf[at] <= 'Z')
			buf[at] = (char)(buf[at] - 'A' + 'a');
		if (n > 0 && write(2, buf, (size_t)n) < 0) {
			/* no stderr either: the exit status is all there is */
		}
	}
}

static int load_seccomp(int fd, unsigned long flags)
{
	static struct sock_filter insns[4096];
	size_t got = 0;
	for (;;) {
		ssize_t n = read(fd, (char *)insns + got, MAX_BPF - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		got += (size_t)n;
		if (got == MAX_BPF)
			break;
	}
	close(fd);
	if (got == 0 || got % sizeof(struct sock_filter)) {
		errno = EINVAL;
		return -1;
	}
	struct sock_fprog prog = {.len = (unsigned short)(got / sizeof(struct sock_filter)),
				  .filter = insns};
	if (flags)
		return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
}

int main(int argc, char **argv, char **envp)
{
	if (argc < 7 || strcmp(argv[0], MAGIC) != 0) {
		static const char msg[] = "minirun-exec: only the minirun runtime runs this\n";
		if (write(2, msg, sizeof(msg) - 1) < 0) {
			/* nothing to do */
		}
		return 126;
	}
	int sync = atoi(argv[1]);
	int to_stderr = argv[2][0] == '1';
	int sfd = atoi(argv[3]);
	unsigned long flags = strtoul(argv[4], NULL, 10);
	const char *path = argv[5];
	if (sync >= 0)
		fcntl(sync, F_SETFD, FD_CLOEXEC);
	if (sfd >= 0 && load_seccomp(sfd, flags) != 0) {
		int err = errno;
		if (to_stderr) {
			char buf[256];
			int n = snprintf(buf, sizeof(buf),
					 "minirun: loading the seccomp filter failed: %s\n", strerror(err));
			if (n > 0 && write(2, buf, (size_t)n) < 0) {
				/* see report() */
			}
		}
		if (sync >= 0) {
			char buf[256];
			int n = snprintf(buf, sizeof(buf),
					 "S%d%cRuntimeFailure%cloading the seccomp filter failed: %s",
					 err, 0, 0, strerror(err));
			signal(SIGPIPE, SIG_IGN);
			if (n > 0 && write(sync, buf, (size_t)n) < 0) {
				/* see report() */
			}
		}
		return 1;
	}
	execve(path, argv + 6, envp);
	int err = errno;
	report(sync, to_stderr, err, path, argv[6]);
	return err == ENOENT ? 127 : 126;
}
