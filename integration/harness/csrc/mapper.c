// mapper: the test workload of executable mappings (harness.StartMapper).
// It reads commands from stdin, one a line, and answers each with one line on stdout ("ok ..." or
// "err ..."):
//   mmapx PATH      map PATH PROT_READ|PROT_EXEC (kept mapped; fd closed)
//   mmapr PATH      map PATH PROT_READ only
//   mprotect PATH   map PATH PROT_READ, then mprotect it to PROT_READ|PROT_EXEC
//   dlopen PATH     dlopen(PATH, RTLD_NOW)
//   preload PATH    start a child (same namespaces) with LD_PRELOAD=PATH that
//                   stays until this process exits; answers "ok" once the
//                   child's ld.so has mapped it
//   loop PATH N     N times mmap(PROT_READ|PROT_EXEC)+munmap of PATH; answers
//                   "ok WALL CPU": elapsed and thread CPU nanoseconds
//   exit
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void *map(const char *path, int prot, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return NULL;
	*len = st.st_size ? st.st_size : 4096;
	void *p = mmap(NULL, *len, prot, MAP_PRIVATE, fd, 0);
	close(fd);
	return p == MAP_FAILED ? NULL : p;
}

static int preload(const char *self, const char *path)
{
	int p[2];
	if (pipe(p) < 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(p[1], 3);
		setenv("LD_PRELOAD", path, 1);
		execl(self, self, "--hold", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	char c;
	int n = read(p[0], &c, 1); // the held child writes once ld.so is done
	close(p[0]);
	return n == 1 ? 0 : -1;
}

static long long ns(clockid_t clk)
{
	struct timespec t;
	clock_gettime(clk, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static long long loop(const char *path, long n, long long *cpu)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return -1;
	long long wall = ns(CLOCK_MONOTONIC);
	*cpu = ns(CLOCK_THREAD_CPUTIME_ID);
	for (long i = 0; i < n; i++) {
		void *m = mmap(NULL, st.st_size, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
		if (m == MAP_FAILED)
			return -1;
		munmap(m, st.st_size);
	}
	*cpu = ns(CLOCK_THREAD_CPUTIME_ID) - *cpu;
	wall = ns(CLOCK_MONOTONIC) - wall;
	close(fd);
	return wall;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "--hold")) {
		write(3, "x", 1);
		close(3);
		pause();
		return 0;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	char line[4096];
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		char *arg = strchr(line, ' ');
		if (arg)
			*arg++ = 0;
		size_t len;
		void *m;
		if (!strcmp(line, "exit"))
			return 0;
		if (!strcmp(line, "mmapx") || !strcmp(line, "mmapr")) {
			m = map(arg, line[4] == 'x' ? PROT_READ | PROT_EXEC : PROT_READ, &len);
			printf(m ? "ok %p\n" : "err %m\n", m);
		} else if (!strcmp(line, "mprotect")) {
			m = map(arg, PROT_READ, &len);
			if (m && mprotect(m, len, PROT_READ | PROT_EXEC) == 0)
				printf("ok %p\n", m);
			else
				printf("err %m\n");
		} else if (!strcmp(line, "dlopen")) {
			m = dlopen(arg, RTLD_NOW | RTLD_LOCAL);
			printf(m ? "ok\n" : "err %s\n", m ? "" : dlerror());
		} else if (!strcmp(line, "preload")) {
			printf(preload(argv[0], arg) == 0 ? "ok\n" : "err %m\n");
		} else if (!strcmp(line, "loop")) {
			char *n = arg ? strchr(arg, ' ') : NULL;
			if (n)
				*n++ = 0;
			long long cpu = 0, wall = n ? loop(arg, atol(n), &cpu) : -1;
			if (wall >= 0)
				printf("ok %lld %lld\n", wall, cpu);
			else
				printf("err %m\n");
		} else {
			printf("err unknown command %s\n", line);
		}
	}
	return 0;
}
