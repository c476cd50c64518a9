// The loaders fuzz target's committed corpus (csrc/fuzz/corpus/fuzz_loaders) through the target's
// own loading code (csrc/fuzz/loader_input.h), in every build ctest runs: each valid-* seed must
// load and run, else the fuzzer would only explore error paths; each bad-* (a malformed folder)
// must be refused with a message; crash-* (inputs that crashed the target before their fix) may
// load or be refused but must not crash: under build/asan one whose fix is undone aborts here.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "check.h"
#include "loader_input.h"

int main() {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (const fs::directory_entry& e : fs::directory_iterator(MBK_FUZZ_CORPUS))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  const mbk::fuzz::TempFolder folder;
  int valid = 0;
  for (const fs::path& p : files) {
    std::ifstream f(p, std::ios::binary);
    const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
    const std::optional<std::string> error = mbk::fuzz::load(bytes.data(), bytes.size(), folder.path());
    const std::string name = p.filename().string();
    std::printf("%s: %s\n", name.c_str(), error ? error->c_str() : "loaded and ran");
    if (name.rfind("valid-", 0) == 0) {
      ++valid;
      CHECK(!error, "seed %s must load: %s", name.c_str(), error->c_str());
    } else if (name.rfind("bad-", 0) == 0) {
      CHECK(error && !error->empty(), "%s must be refused with a message", name.c_str());
    }
  }
  CHECK(valid >= 4, "the corpus %s must hold the valid-* seeds (fp32 and int8), found %d", MBK_FUZZ_CORPUS, valid);
  return mbk::test::check_exit_code();
}
