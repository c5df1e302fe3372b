// sanitizer_defaults.cpp — default options of ASan, UBSan and LeakSanitizer,
// compiled into every executable of an RMOE_SANITIZE / RMOE_FUZZ build (the
// top-level CMakeLists.txt links it). The sanitizer runtimes call these
// functions at start-up, before main, so the options hold however a program
// is started: ctest, a CLI test script, mpiexec's ranks, the apps' re-exec of
// themselves (src/core/threads.cpp). ASAN_OPTIONS, UBSAN_OPTIONS and
// LSAN_OPTIONS in the environment are read afterwards and override single
// options (scripts/test.sh adds log_path so every report also lands in a file
// it checks).
//
//   exitcode=86            an ASan/UBSan/LSan report never looks like one of
//                          the apps' own exit statuses (1 failure, 2 usage, 3
//                          requeue), so a CLI test that expects a failure
//                          still notices a sanitizer report
//   print_suppressions=0   suppressed foreign leaks (tests/lsan.supp) print
//                          nothing: the CLI tests compare stderr
//   suppressions=...       tests/lsan.supp (Open MPI / OpenBLAS / HDF5 /
//                          OpenMP runtime allocations that live until exit)
#ifndef RMOE_LSAN_SUPPRESSIONS
#error "RMOE_LSAN_SUPPRESSIONS (the path of tests/lsan.supp) must be defined by the build"
#endif

extern "C" {

// Visible and unmangled: the runtimes look these up by name.
__attribute__((visibility("default"), used)) const char* __asan_default_options() {
  return "detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=0:"
         "exitcode=86:print_summary=1";
}

__attribute__((visibility("default"), used)) const char* __ubsan_default_options() {
  return "print_stacktrace=1:halt_on_error=1:report_error_type=1:exitcode=86";
}

__attribute__((visibility("default"), used)) const char* __lsan_default_options() {
  return "print_suppressions=0:suppressions=" RMOE_LSAN_SUPPRESSIONS;
}

}  // extern "C"
