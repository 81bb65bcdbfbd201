// A shared library for the mmap source's tests (gcc -shared -fPIC).
int mmapsrc_test_value(void) { return 42; }
