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
//   suppressions=...       tests/lsan.supp (allocations of Open MPI, HDF5
//                          and LLVM's OpenMP tool that live until exit)
//
//   intercept_tls_get_addr=0
//                          clang 14's runtime guesses the bounds of a dynamic
//                          TLS block from a glibc < 2.34 header whenever the
//                          block's address is 16 mod 4096; with glibc 2.36 and
//                          ASan's malloc that reads garbage, and at exit
//                          LeakSanitizer's tracer dies on it ("Tracer caught
//                          signal 11 ... LeakSanitizer has encountered a fatal
//                          error"): in every run of a binary whose heap layout
//                          puts such a block there (rmoe_train, some builds).
//                          Not intercepting __tls_get_addr only stops LSan from
//                          scanning the dynamic TLS of dlopen()ed libraries;
//                          rmoe's own thread_local data is in the executable's
//                          static TLS, which is still scanned. (Fixed in
//                          LLVM 16: the runtime asks its allocator instead.)
//
// It also replaces dlclose() by a no-op in these executables: Open MPI
// unloads its components (openmpi3/mca_*.so) in MPI_Finalize, after which LSan
// cannot name the library that made an allocation (the stack shows
// "<unknown module>", which no suppression matches). Keeping every loaded
// library mapped until exit changes nothing else: no rmoe code loads or
// unloads libraries.
#ifndef RMOE_LSAN_SUPPRESSIONS
#error "RMOE_LSAN_SUPPRESSIONS (the path of tests/lsan.supp) must be defined by the build"
#endif

extern "C" {

// Visible and unmangled: the runtimes look these up by name.
__attribute__((visibility("default"), used)) const char* __asan_default_options() {
  return "detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=0:"
         "exitcode=86:print_summary=1:intercept_tls_get_addr=0";
}

__attribute__((visibility("default"), used)) const char* __ubsan_default_options() {
  return "print_stacktrace=1:halt_on_error=1:report_error_type=1:exitcode=86";
}

__attribute__((visibility("default"), used)) const char* __lsan_default_options() {
  return "print_suppressions=0:suppressions=" RMOE_LSAN_SUPPRESSIONS;
}

// Library unloading is skipped (see above); always reports success.
__attribute__((visibility("default"), used)) int dlclose(void*) { return 0; }

}  // extern "C"
