// A library whose code leaves a trace when it runs (kernel-patches/test/run-bpf
// builds it for TestGuestServe in internal/daemon): its constructor creates
// the file $IMAFS_MARKER and says so on stderr. Preloaded (LD_PRELOAD) or
// dlopen'ed in a container whose policy appraises func=MMAP_CHECK, the marker
// exists only if ld.so could map the library executable.
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((constructor)) static void imafs_marker(void)
{
	const char *path = getenv("IMAFS_MARKER");
	static const char msg[] = "imafs-preload-marker: constructor ran\n";

	if (path) {
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd >= 0) {
			write(fd, "ran\n", 4);
			close(fd);
		}
	}
	write(2, msg, sizeof msg - 1);
}

int imafs_marker_value(void) { return 42; }
