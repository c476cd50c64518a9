// A minimal test harness for the C++ core tests: CHECK records a failure with its location and
// keeps going; main returns check_exit_code() so ctest sees the result.
#pragma once

#include <cstdio>

namespace mbk::test {

inline int& failures() {
  static int n = 0;
  return n;
}

inline int check_exit_code() {
  if (failures() == 0) {
    std::printf("all checks passed\n");
    return 0;
  }
  std::printf("%d check(s) FAILED\n", failures());
  return 1;
}

}  // namespace mbk::test

// CHECK(cond, printf-format, args...): the message says what was compared.
#define CHECK(cond, ...)                                              \
  do {                                                                \
    if (!(cond)) {                                                    \
      ++::mbk::test::failures();                                      \
      std::printf("FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
      std::printf(__VA_ARGS__);                                       \
      std::printf("\n");                                              \
    }                                                                 \
  } while (0)
