// Reads a safetensors file (the format `save_pretrained` writes): an 8-byte little-endian header
// length, a JSON header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__"},
// then the raw little-endian tensor bytes. The file is read into memory once; tensors are
// converted to fp32 on request (F32, F16 and BF16 are accepted), int8 ones (I8) read as they are.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mbk::engine {

class SafeTensors {
 public:
  // Throws std::runtime_error naming the path on a missing, truncated or malformed file.
  explicit SafeTensors(const std::string& path);

  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  std::vector<std::string> names() const;
  std::vector<int64_t> shape(const std::string& name) const;
  std::string dtype(const std::string& name) const;  // "F32", "I8", ...

  // The tensor as fp32, row-major; throws std::runtime_error naming the tensor when it is missing,
  // its shape is not `expected`, or its dtype is not a float type.
  std::vector<float> get(const std::string& name, const std::vector<int64_t>& expected) const;
  // An I8 tensor (an int8 checkpoint's weights); the same errors, for any other dtype too.
  std::vector<int8_t> get_int8(const std::string& name, const std::vector<int64_t>& expected) const;

 private:
  struct Entry {
    std::string dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;  // byte offsets into data_
  };
  // The entry of `name` after checking its shape and its size in bytes of `width`-byte elements.
  const Entry& checked(const std::string& name, const std::vector<int64_t>& expected,
                              int width) const;
  std::string path_;
  std::vector<unsigned char> data_;  // the tensor bytes (after the header)
  std::map<std::string, Entry> entries_;
};

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace mbk::engine
