// A shared library for the mapping tests (harness.BuildMapper).
int mmapsrc_test_value(void) { return 42; }
