/* Syscall probe for the seccomp tests: calls each syscall directly (syscall(2), so libc
 * wrappers and fallbacks cannot hide what the filter answered) and prints one line per
 * call: "name=OK" or "name=<ERRNO NAME>" (EPERM, ENOSYS...).
 *
 * Every call runs in a forked child, so one that succeeds (unshare, a new user namespace)
 * cannot change what the next one sees. Arguments are chosen so that a call the filter
 * ALLOWS fails harmlessly in the kernel (ENOENT, EINVAL, EBADF...) or does nothing lasting:
 * the probe may run as root on the host. Build: gcc -static -O2 -o syscalls syscalls.c
 * Usage: syscalls [name...]   (no name: every probe)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif
#define AF_VSOCK_ 40
#define PER_BSD_ 0x0006

static long p_getpid(void) { return syscall(SYS_getpid); }
static long p_uname(void) {
    char buf[6 * 65];
    return syscall(SYS_uname, buf);
}
static long p_unshare_user(void) { return syscall(SYS_unshare, CLONE_NEWUSER); }
static long p_unshare_ns(void) { return syscall(SYS_unshare, CLONE_NEWNS); }
static long p_unshare_fs(void) { return syscall(SYS_unshare, CLONE_FS); }
static long p_mount(void) {
    return syscall(SYS_mount, "none", "/nonexistent-minirun-probe", "tmpfs", 0UL, NULL);
}
static long p_umount2(void) { return syscall(SYS_umount2, "/nonexistent-minirun-probe", 0); }
static long p_pivot_root(void) {
    return syscall(SYS_pivot_root, "/nonexistent-minirun-a", "/nonexistent-minirun-b");
}
static long p_keyctl(void) { return syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 0); }
static long p_add_key(void) {
    return syscall(SYS_add_key, "minirun-no-such-type", "probe", "x", 1, -2);
}
static long p_request_key(void) {
    return syscall(SYS_request_key, "minirun-no-such-type", "probe", NULL, 0);
}
static long p_kexec_load(void) { return syscall(SYS_kexec_load, 0UL, 0UL, NULL, ~0UL); }
static long p_init_module(void) { return syscall(SYS_init_module, NULL, 0UL, ""); }
static long p_finit_module(void) { return syscall(SYS_finit_module, -1, "", 0); }
static long p_delete_module(void) { return syscall(SYS_delete_module, "minirun_none", 0); }
static long p_reboot(void) { return syscall(SYS_reboot, 0, 0, 0, NULL); /* bad magic */ }
static long p_ptrace(void) {
    return syscall(SYS_ptrace, 2 /* PEEKDATA */, getppid(), NULL, NULL);
}
static long p_personality_bad(void) { return syscall(SYS_personality, PER_BSD_); }
static long p_personality_query(void) { return syscall(SYS_personality, 0xffffffffUL); }
static long p_clone_newuser(void) {
    long r = syscall(SYS_clone, (unsigned long)(CLONE_NEWUSER | SIGCHLD), NULL, NULL, NULL, 0);
    if (r == 0)
        _exit(0); /* the clone child */
    if (r > 0)
        waitpid((pid_t)r, NULL, 0);
    return r;
}
static long p_clone3(void) { return syscall(SYS_clone3, NULL, 0UL); }
static long p_bpf(void) { return syscall(SYS_bpf, -1, NULL, 0); }
static long p_perf_event_open(void) { return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0); }
static long p_open_by_handle_at(void) { return syscall(SYS_open_by_handle_at, -1, NULL, 0); }
static long p_chroot(void) { return syscall(SYS_chroot, "/nonexistent-minirun-probe"); }
static long p_clock_settime(void) {
    struct timespec ts = {0, 0};
    return syscall(SYS_clock_settime, CLOCK_MONOTONIC, &ts); /* EINVAL if allowed */
}
static long p_socket_vsock(void) { return syscall(SYS_socket, AF_VSOCK_, SOCK_STREAM, 0); }
static long p_socket_unix(void) { return syscall(SYS_socket, 1 /* AF_UNIX */, SOCK_STREAM, 0); }
static long p_io_uring_setup(void) { return syscall(SYS_io_uring_setup, 0, NULL); }

struct probe {
    const char *name;
    long (*fn)(void);
};

static const struct probe probes[] = {
    {"getpid", p_getpid},
    {"uname", p_uname},
    {"unshare_newuser", p_unshare_user},
    {"unshare_newns", p_unshare_ns},
    {"unshare_fs", p_unshare_fs},
    {"mount", p_mount},
    {"umount2", p_umount2},
    {"pivot_root", p_pivot_root},
    {"keyctl", p_keyctl},
    {"add_key", p_add_key},
    {"request_key", p_request_key},
    {"kexec_load", p_kexec_load},
    {"init_module", p_init_module},
    {"finit_module", p_finit_module},
    {"delete_module", p_delete_module},
    {"reboot", p_reboot},
    {"ptrace", p_ptrace},
    {"personality_bad", p_personality_bad},
    {"personality_query", p_personality_query},
    {"clone_newuser", p_clone_newuser},
    {"clone3", p_clone3},
    {"bpf", p_bpf},
    {"perf_event_open", p_perf_event_open},
    {"open_by_handle_at", p_open_by_handle_at},
    {"chroot", p_chroot},
    {"clock_settime", p_clock_settime},
    {"socket_vsock", p_socket_vsock},
    {"socket_unix", p_socket_unix},
    {"io_uring_setup", p_io_uring_setup},
};

/* exit status of the child: 0 = the call succeeded, else its errno */
static int run_isolated(const struct probe *p) {
    pid_t pid = fork();
    if (pid < 0) { /* fork itself filtered: run in place */
        long r = p->fn();
        return r < 0 ? errno : 0;
    }
    if (pid == 0) {
        long r = p->fn();
        _exit(r < 0 ? (errno & 0xff) : 0);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0)
        return -1;
    if (WIFSIGNALED(status))
        return -WTERMSIG(status);
    return WEXITSTATUS(status);
}

static void report(const char *name, int err) {
    if (err == 0)
        printf("%s=OK\n", name);
    else if (err < 0)
        printf("%s=SIG%d\n", name, -err);
    else {
        const char *e = strerrorname_np(err);
        if (e)
            printf("%s=%s\n", name, e);
        else
            printf("%s=E%d\n", name, err);
    }
}

int main(int argc, char **argv) {
    size_t n = sizeof(probes) / sizeof(probes[0]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < n; i++) {
        int wanted = argc < 2;
        for (int a = 1; a < argc && !wanted; a++)
            wanted = strcmp(argv[a], probes[i].name) == 0;
        if (wanted)
            report(probes[i].name, run_isolated(&probes[i]));
    }
    return 0;
}
