// SPDX-License-Identifier: GPL-2.0
/*
 * ktest-helper: the parts of the QEMU proof busybox cannot do (pidfds,
 * clone3 with set_tid, mmap, xattrs, timing).  Built static by
 * kernel-patches/test/run into the initramfs as /bin/ktest-helper.
 *
 *   reg FD-KIND PID LABEL  register PID's pid namespace by a pidfd
 *                          (FD-KIND pidfd) or by /proc/PID/ns/pid (nsfs)
 *   regnul PID             write "<pidfd> ab\0cd": must be refused
 *   pidreuse LABEL         pidfd of a namespace's init that exited, its
 *                          pid number reused by another namespace's init
 *   setima FILE HEX        security.ima = sha256 digest HEX (digest-ng)
 *   setxattr FILE NAME HEX extended attribute NAME = the bytes HEX
 *   mapx FILE              map FILE PROT_EXEC
 *   mmapexec FILE          map FILE shared writable, then PROT_EXEC
 *   cycles N FILE          N x (register a namespace, open FILE in it,
 *                          unregister)
 *   bench NREG OPENS FILE  NREG registered namespaces; time OPENS opens
 *                          of FILE in the host and in a registered one
 *   workload NNS FILES...  NNS registered namespaces each open FILES
 *   workload-unreg NNS FILES...  the same in NNS pid namespaces nobody
 *                          registers (what an unpatched kernel can run)
 *   fill N                 register N namespaces, report the first error
 *   readers N FILE         N registered namespaces b0..b<N-1> read FILE in
 *                          turn; then the host holds it open for read and
 *                          opens it for write (ToMToU), then unregisters
 * Prints "OK ..." or "ERR <errno name> ...", exit 0 on OK.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <linux/sched.h>

#define NSFILE "/sys/kernel/security/ima/namespaces"

static int pidfd_open(pid_t pid)
{
	return syscall(SYS_pidfd_open, pid, 0);
}

/* nswrite: one write of len bytes to the namespaces file; 0 or errno */
static int nswrite(const char *buf, size_t len)
{
	int fd = open(NSFILE, O_WRONLY);
	int err = 0;

	if (fd < 0)
		return errno;
	if (write(fd, buf, len) != (ssize_t)len)
		err = errno;
	close(fd);
	return err;
}

static int reg_fd(int fd, const char *label)
{
	char buf[300];
	int n = snprintf(buf, sizeof(buf), "%d %s\n", fd, label);

	return nswrite(buf, n);
}

static int unreg(const char *label)
{
	char buf[300];
	int n = snprintf(buf, sizeof(buf), "-%s\n", label);

	return nswrite(buf, n);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * A pid namespace whose init waits for commands on a pipe: 'o' opens the
 * file, 'p' opens the path that follows, 't' times opens (count in the
 * command pipe, result back), 'x' exits.
 */
struct child {
	pid_t pid;
	int pidfd, cmd, res;
};

static const char *child_file;

static void child_loop(int cmd, int res)
{
	char c;
	long n, i;
	double t;

	static char path[256];

	while (read(cmd, &c, 1) == 1) {
		if (c == 'x')
			_exit(0);
		n = 1;
		if (c == 't' && read(cmd, &n, sizeof(n)) != sizeof(n))
			_exit(1);
		/* 'p': open the path that follows (set after the fork) */
		if (c == 'p') {
			if (read(cmd, path, sizeof(path)) != sizeof(path))
				_exit(1);
			child_file = path;
		}
		t = now();
		for (i = 0; i < n; i++) {
			int fd = open(child_file, O_RDONLY);

			if (fd >= 0)
				close(fd);
		}
		t = now() - t;
		if (write(res, &t, sizeof(t)) != sizeof(t))
			_exit(1);
	}
	_exit(0);
}

static int spawn(struct child *c, pid_t set_tid)
{
	int cp[2], rp[2];
	pid_t tids[2] = { 1, set_tid };
	struct clone_args args = { .flags = CLONE_NEWPID | CLONE_PIDFD,
				   .exit_signal = SIGCHLD };
	long pid;

	if (pipe(cp) || pipe(rp))
		return errno;
	args.pidfd = (uintptr_t)&c->pidfd;
	if (set_tid) {
		args.set_tid = (uintptr_t)tids;
		args.set_tid_size = 2;
	}
	pid = syscall(SYS_clone3, &args, sizeof(args));
	if (pid < 0)
		return errno;
	if (pid == 0) {
		/* keep only the two pipe ends, as fds 3 and 4 */
		if (dup2(cp[0], 1000) < 0 || dup2(rp[1], 1001) < 0 ||
		    dup2(1000, 3) < 0 || dup2(1001, 4) < 0)
			_exit(1);
		syscall(SYS_close_range, 5, ~0U, 0);
		child_loop(3, 4);
	}
	close(cp[0]);
	close(rp[1]);
	c->pid = pid;
	c->cmd = cp[1];
	c->res = rp[0];
	return 0;
}

/* ask: one command to a child, wait for its answer; seconds taken */
static double ask(struct child *c, char cmd, long n)
{
	double t = -1;

	char path[256] = "";

	if (write(c->cmd, &cmd, 1) != 1)
		return -1;
	if (cmd == 't' && write(c->cmd, &n, sizeof(n)) != sizeof(n))
		return -1;
	if (cmd == 'p') {
		snprintf(path, sizeof(path), "%s", child_file);
		if (write(c->cmd, path, sizeof(path)) != sizeof(path))
			return -1;
	}
	if (read(c->res, &t, sizeof(t)) != sizeof(t))
		return -1;
	return t;
}

static void reap(struct child *c)
{
	char x = 'x';

	if (write(c->cmd, &x, 1) != 1)
		kill(c->pid, SIGKILL);
	waitpid(c->pid, NULL, 0);
	close(c->cmd);
	close(c->res);
	close(c->pidfd);
}

static int fail(int err, const char *what)
{
	printf("ERR %s %s\n", strerrorname_np(err) ?: "?", what);
	return 1;
}

static int cmd_reg(char **av)
{
	char path[64];
	int fd, err;

	if (!strcmp(av[0], "pidfd")) {
		fd = pidfd_open(atoi(av[1]));
	} else {
		snprintf(path, sizeof(path), "/proc/%s/ns/pid", av[1]);
		fd = open(path, O_RDONLY);
	}
	if (fd < 0)
		return fail(errno, "open");
	err = reg_fd(fd, av[2]);
	close(fd);
	if (err)
		return fail(err, "register");
	printf("OK registered %s by %s\n", av[2], av[0]);
	return 0;
}

static int cmd_regnul(char **av)
{
	char buf[64];
	int fd = pidfd_open(atoi(av[0]));
	int n, err;

	if (fd < 0)
		return fail(errno, "pidfd_open");
	n = snprintf(buf, sizeof(buf), "%d ab", fd);
	memcpy(buf + n, "\0cd\n", 4);
	err = nswrite(buf, n + 4);
	close(fd);
	if (err)
		return fail(err, "write with NUL");
	printf("OK write with NUL accepted\n");
	return 0;
}

/*
 * The init of namespace X exits and is reaped; namespace Y's init gets the
 * same pid number (clone3 set_tid).  A pidfd opened for X before must not
 * register Y.
 */
static int cmd_pidreuse(char **av)
{
	struct child x, y;
	pid_t nr;
	int err;

	err = spawn(&x, 0);
	if (err)
		return fail(err, "spawn x");
	nr = x.pid;
	ask(&x, 'o', 0);
	kill(x.pid, SIGKILL);
	waitpid(x.pid, NULL, 0);
	err = spawn(&y, nr);
	if (err) {
		printf("SKIP clone3 set_tid: %s\n", strerrorname_np(err));
		return 2;
	}
	err = reg_fd(x.pidfd, av[0]);
	printf("INFO pid %d reused: x's pidfd registers: %s\n", nr,
	       err ? strerrorname_np(err) : "OK");
	reap(&y);
	close(x.pidfd);
	if (err != ESRCH)
		return fail(err, "pidfd of an exited init did not give ESRCH");
	printf("OK pidfd of the exited init refused with ESRCH\n");
	return 0;
}

static int cmd_setima(char **av)
{
	unsigned char v[2 + 32];
	int i;

	if (strlen(av[1]) != 64)
		return fail(EINVAL, "hex digest");
	v[0] = 0x04;	/* IMA_XATTR_DIGEST_NG */
	v[1] = 4;	/* HASH_ALGO_SHA256 */
	for (i = 0; i < 32; i++)
		sscanf(av[1] + 2 * i, "%2hhx", &v[2 + i]);
	if (setxattr(av[0], "security.ima", v, sizeof(v), 0))
		return fail(errno, "setxattr");
	printf("OK security.ima set\n");
	return 0;
}

static int cmd_setxattr(char **av)
{
	unsigned char v[512];
	size_t i, n = strlen(av[2]) / 2;

	if (strlen(av[2]) % 2 || n == 0 || n > sizeof(v))
		return fail(EINVAL, "hex value");
	for (i = 0; i < n; i++)
		if (sscanf(av[2] + 2 * i, "%2hhx", &v[i]) != 1)
			return fail(EINVAL, "hex value");
	if (setxattr(av[0], av[1], v, n, 0))
		return fail(errno, "setxattr");
	printf("OK %s set\n", av[1]);
	return 0;
}

static int cmd_mmapexec(char **av)
{
	int wfd = open(av[0], O_RDWR), xfd;
	void *w, *x;

	if (wfd < 0)
		return fail(errno, "open rw");
	w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, wfd, 0);
	if (w == MAP_FAILED)
		return fail(errno, "mmap shared writable");
	xfd = open(av[0], O_RDONLY);
	if (xfd < 0)
		return fail(errno, "open ro");
	x = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, xfd, 0);
	if (x == MAP_FAILED)
		return fail(errno, "mmap exec while mapped writable");
	printf("OK mapped for exec while mapped writable\n");
	return 0;
}

static int cmd_mapx(char **av)
{
	int fd = open(av[0], O_RDONLY);

	if (fd < 0)
		return fail(errno, "open ro");
	if (mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0) == MAP_FAILED)
		return fail(errno, "mmap exec");
	printf("OK mapped for exec\n");
	return 0;
}

static int cmd_cycles(char **av)
{
	long n = atol(av[0]), i;
	struct child c;
	int err;

	child_file = av[1];
	err = spawn(&c, 0);
	if (err)
		return fail(err, "spawn");
	for (i = 0; i < n; i++) {
		err = reg_fd(c.pidfd, "cycle");
		if (err)
			return fail(err, "register");
		ask(&c, 'o', 0);
		err = unreg("cycle");
		if (err)
			return fail(err, "unregister");
	}
	reap(&c);
	printf("OK %ld cycles\n", n);
	return 0;
}

/* no_register: fill spawns the namespaces without registering them */
static int no_register;

/* spawn and register n namespaces b<i>; returns how many, errno in *err */
static long fill(struct child *cs, long n, int *err)
{
	char label[32];
	long i;

	*err = 0;
	for (i = 0; i < n; i++) {
		*err = spawn(&cs[i], 0);
		if (*err)
			break;
		snprintf(label, sizeof(label), "b%ld", i);
		*err = no_register ? 0 : reg_fd(cs[i].pidfd, label);
		if (*err) {
			reap(&cs[i]);
			break;
		}
	}
	return i;
}

static void unfill(struct child *cs, long n)
{
	char label[32];
	long i;

	for (i = 0; i < n; i++) {
		snprintf(label, sizeof(label), "b%ld", i);
		if (!no_register)
			unreg(label);
		reap(&cs[i]);
	}
}

static int cmd_bench(char **av)
{
	long nreg = atol(av[0]), opens = atol(av[1]), got, i;
	struct child *cs = calloc(nreg + 1, sizeof(*cs));
	double host, ns = 0;
	int err;

	child_file = av[2];
	got = fill(cs, nreg, &err);
	if (got < nreg)
		return fail(err, "register");
	host = now();
	for (i = 0; i < opens; i++) {
		int fd = open(av[2], O_RDONLY);

		if (fd >= 0)
			close(fd);
	}
	host = now() - host;
	if (nreg)
		ns = ask(&cs[nreg - 1], 't', opens);
	unfill(cs, nreg);
	printf("OK bench registrations=%ld opens=%ld host_us_per_open=%.1f ns_us_per_open=%.1f\n",
	       nreg, opens, host * 1e6 / opens, ns * 1e6 / opens);
	return 0;
}

static long list_count(void)
{
	FILE *f = fopen("/sys/kernel/security/ima/runtime_measurements_count", "r");
	long n = -1;

	if (f) {
		if (fscanf(f, "%ld", &n) != 1)
			n = -1;
		fclose(f);
	}
	return n;
}

static int cmd_workload(int ac, char **av)
{
	long nns = atol(av[0]), got, i, j, c0;
	struct child *cs = calloc(nns + 1, sizeof(*cs));
	double t;
	int err;

	got = fill(cs, nns, &err);
	if (got < nns)
		return fail(err, "register");
	c0 = list_count();
	t = now();
	for (j = 1; j < ac; j++) {
		child_file = av[j];
		if (!nns) {
			int fd = open(av[j], O_RDONLY);

			if (fd >= 0)
				close(fd);
		}
		for (i = 0; i < nns; i++)
			ask(&cs[i], 'p', 0);
	}
	t = now() - t;
	c0 = list_count() - c0;
	unfill(cs, nns);
	printf("OK workload%s namespaces=%ld files=%d entries=%ld seconds=%.3f extends_per_s=%.1f\n",
	       no_register ? "-unreg" : "", nns, ac - 1, c0, t, c0 / t);
	return 0;
}

static int cmd_readers(char **av)
{
	long n = atol(av[0]), got, i;
	struct child *cs = calloc(n + 1, sizeof(*cs));
	int err, r, w;

	child_file = av[1];
	got = fill(cs, n, &err);
	if (got < n)
		return fail(err, "register");
	for (i = 0; i < n; i++)
		ask(&cs[i], 'p', 0);
	r = open(av[1], O_RDONLY);
	w = open(av[1], O_WRONLY);
	err = (r < 0 || w < 0) ? errno : 0;
	if (w >= 0)
		close(w);
	if (r >= 0)
		close(r);
	unfill(cs, n);
	if (err)
		return fail(err, "open");
	printf("OK readers %ld\n", n);
	return 0;
}

static int cmd_fill(char **av)
{
	long n = atol(av[0]), got;
	struct child *cs = calloc(n + 1, sizeof(*cs));
	int err;

	got = fill(cs, n, &err);
	printf("%s fill registered=%ld error=%s\n", err ? "ERR" : "OK", got,
	       err ? strerrorname_np(err) : "none");
	unfill(cs, got);
	return err ? 1 : 0;
}

int main(int ac, char **av)
{
	struct rlimit nofile = { 65536, 65536 };

	setvbuf(stdout, NULL, _IOLBF, 0);
	/* a thousand namespaces: three fds each */
	setrlimit(RLIMIT_NOFILE, &nofile);
	if (ac >= 4 && !strcmp(av[1], "workload-unreg")) {
		no_register = 1;
		return cmd_workload(ac - 2, av + 2);
	}
	if (ac >= 5 && !strcmp(av[1], "reg"))
		return cmd_reg(av + 2);
	if (ac >= 3 && !strcmp(av[1], "regnul"))
		return cmd_regnul(av + 2);
	if (ac >= 3 && !strcmp(av[1], "pidreuse"))
		return cmd_pidreuse(av + 2);
	if (ac >= 4 && !strcmp(av[1], "setima"))
		return cmd_setima(av + 2);
	if (ac >= 5 && !strcmp(av[1], "setxattr"))
		return cmd_setxattr(av + 2);
	if (ac >= 3 && !strcmp(av[1], "mapx"))
		return cmd_mapx(av + 2);
	if (ac >= 3 && !strcmp(av[1], "mmapexec"))
		return cmd_mmapexec(av + 2);
	if (ac >= 4 && !strcmp(av[1], "cycles"))
		return cmd_cycles(av + 2);
	if (ac >= 5 && !strcmp(av[1], "bench"))
		return cmd_bench(av + 2);
	if (ac >= 3 && !strcmp(av[1], "workload"))
		return cmd_workload(ac - 2, av + 2);
	if (ac >= 4 && !strcmp(av[1], "readers"))
		return cmd_readers(av + 2);
	if (ac >= 3 && !strcmp(av[1], "fill"))
		return cmd_fill(av + 2);
	fprintf(stderr, "usage: see the comment at the top of helper.c\n");
	return 2;
}
