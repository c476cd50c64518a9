#include "engine/safetensors.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "engine/json_text.h"

namespace mbk::engine {
namespace {

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalize
    exp = 113;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// A size (below 2^63: shapes are int64_t) or an offset (below 2^64) of the header: a JSON integer.
// Not a float: nlohmann converts 1e300 to an integer with undefined behavior.
uint64_t whole(const nlohmann::json& v, const char* field, bool size) {
  const bool ok = v.is_number_unsigned() ? !size || v.get<uint64_t>() <= INT64_MAX
                                         : v.is_number_integer() && v.get<int64_t>() >= 0;
  if (!ok)
    throw std::runtime_error(std::string(field) + ": expected integers in [0, " + (size ? "2^63" : "2^64") +
                             "), got " + describe(v));
  return v.get<uint64_t>();
}

}  // namespace

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

SafeTensors::SafeTensors(const std::string& path) : path_(path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("safetensors: cannot open '" + path + "'");
  unsigned char len_bytes[8];
  if (!f.read(reinterpret_cast<char*>(len_bytes), 8))
    throw std::runtime_error("safetensors: '" + path + "' is shorter than its 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | len_bytes[i];
  f.seekg(0, std::ios::end);
  const uint64_t size = static_cast<uint64_t>(f.tellg());
  if (header_len > size - 8)
    throw std::runtime_error("safetensors: '" + path + "': header length " +
                             std::to_string(header_len) + " exceeds the file size " +
                             std::to_string(size));
  std::string header(header_len, '\0');
  f.seekg(8);
  f.read(header.data(), static_cast<std::streamsize>(header_len));
  data_.resize(size - 8 - header_len);
  f.read(reinterpret_cast<char*>(data_.data()), static_cast<std::streamsize>(data_.size()));
  if (!f) throw std::runtime_error("safetensors: '" + path + "': read failed");

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("safetensors: '" + path + "': header is not valid JSON: " + e.what());
  }
  if (!j.is_object())
    throw std::runtime_error("safetensors: '" + path + "': header: expected a JSON object {name: tensor}, got " +
                             describe(j));
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    try {
      if (!it->is_object())
        throw std::runtime_error("expected an object {dtype, shape, data_offsets}, got " + describe(*it));
      Entry e;
      e.dtype = it->at("dtype").get<std::string>();
      const nlohmann::json& shape = it->at("shape");
      const nlohmann::json& offsets = it->at("data_offsets");
      if (!shape.is_array()) throw std::runtime_error("shape: expected a list of sizes, got " + describe(shape));
      for (const nlohmann::json& d : shape)
        e.shape.push_back(static_cast<int64_t>(whole(d, "shape", true)));
      if (!offsets.is_array() || offsets.size() != 2)
        throw std::runtime_error("data_offsets: expected [begin, end], got " + describe(offsets));
      e.begin = whole(offsets[0], "data_offsets", false);
      e.end = whole(offsets[1], "data_offsets", false);
      if (e.begin > e.end || e.end > data_.size())
        throw std::runtime_error("data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                                 "] outside the data section (" + std::to_string(data_.size()) + " bytes)");
      entries_.emplace(it.key(), std::move(e));
    } catch (const std::exception& e) {
      throw std::runtime_error("safetensors: '" + path + "': tensor '" + it.key() + "': " +
                               e.what());
    }
  }
}

std::vector<std::string> SafeTensors::names() const {
  std::vector<std::string> out;
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

std::vector<int64_t> SafeTensors::shape(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    throw std::runtime_error("safetensors: '" + path_ + "' has no tensor '" + name + "'");
  return it->second.shape;
}

std::string SafeTensors::dtype(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    throw std::runtime_error("safetensors: '" + path_ + "' has no tensor '" + name + "'");
  return it->second.dtype;
}

const SafeTensors::Entry& SafeTensors::checked(const std::string& name,
                                               const std::vector<int64_t>& expected,
                                               int width) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    throw std::runtime_error("safetensors: '" + path_ + "' has no tensor '" + name + "'");
  const Entry& e = it->second;
  if (e.shape != expected)
    throw std::runtime_error("safetensors: tensor '" + name + "': expected shape " +
                             shape_str(expected) + ", got " + shape_str(e.shape));
  // The element count, multiplied only while it fits the tensor's bytes: a product of header (and
  // config) sizes could overflow and wrap around to the byte count.
  const uint64_t bytes = e.end - e.begin;
  const bool empty = std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end();
  uint64_t n = empty ? 0 : 1;
  bool fits = true;
  for (size_t i = 0; i < e.shape.size() && !empty && fits; ++i) {
    const uint64_t d = static_cast<uint64_t>(e.shape[i]);
    fits = n <= bytes / width / d;
    n *= fits ? d : 1;
  }
  if (!fits || n * width != bytes)
    throw std::runtime_error("safetensors: tensor '" + name + "': " + std::to_string(bytes) +
                             " bytes for shape " + shape_str(e.shape) + " of " + e.dtype);
  return e;
}

std::vector<float> SafeTensors::get(const std::string& name,
                                    const std::vector<int64_t>& expected) const {
  const std::string type = dtype(name);
  const int width = type == "F32" ? 4 : (type == "F16" || type == "BF16") ? 2 : 0;
  if (width == 0)
    throw std::runtime_error("safetensors: tensor '" + name + "': expected dtype F32, F16 or "
                             "BF16, got " + type);
  const Entry& e = checked(name, expected, width);
  std::vector<float> out(static_cast<size_t>((e.end - e.begin) / width));
  const int64_t n = static_cast<int64_t>(out.size());
  const unsigned char* src = data_.data() + e.begin;
  // Little-endian on every target this builds for (x86-64, AArch64).
  if (width == 4) {
    if (n > 0) std::memcpy(out.data(), src, out.size() * 4);  // memcpy's pointers must not be null
  } else {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      if (e.dtype == "BF16") {
        const uint32_t bits = uint32_t(h) << 16;
        std::memcpy(&out[i], &bits, 4);
      } else {
        out[i] = half_to_float(h);
      }
    }
  }
  return out;
}

std::vector<int8_t> SafeTensors::get_int8(const std::string& name,
                                          const std::vector<int64_t>& expected) const {
  const std::string type = dtype(name);
  if (type != "I8")
    throw std::runtime_error("safetensors: tensor '" + name + "': expected dtype I8, got " + type);
  const Entry& e = checked(name, expected, 1);
  std::vector<int8_t> out(static_cast<size_t>(e.end - e.begin));
  if (!out.empty()) std::memcpy(out.data(), data_.data() + e.begin, out.size());  // pointers may not be null
  return out;
}

}  // namespace mbk::engine
