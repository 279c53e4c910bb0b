#include "core/safetensors.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/json_input.h"

namespace speedrun {

namespace {

constexpr DType kAllDTypes[] = {DType::F32, DType::F64, DType::BF16, DType::I32, DType::U16};

// product(shape) * dtype_size, or false on a negative dimension or overflow.
bool tensor_bytes(const std::vector<int64_t>& shape, DType dtype, uint64_t* bytes) {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, uint64_t(d), &n)) return false;
  }
  *bytes = n;
  return true;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

DType safetensors_dtype(const std::string& name, const std::string& path) {
  for (DType t : kAllDTypes)
    if (dtype_name(t) == name) return t;
  fail("safetensors ", path, ": dtype \"", name,
       "\" is not supported (speedrun reads F32, F64, BF16, I32, U16; convert the tensor, e.g. "
       "with torch: t.float())");
}

void write_safetensors(const std::string& path, const std::vector<TensorRecord>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  std::set<std::string> seen;
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const TensorRecord& t : tensors) {
    check(!t.name.empty() && t.name != "__metadata__", "safetensors ", path, ": tensor name \"",
          t.name, "\" is not allowed");
    check(seen.insert(t.name).second, "safetensors ", path, ": tensor \"", t.name,
          "\" given twice");
    uint64_t bytes = 0;
    check(tensor_bytes(t.shape, t.dtype, &bytes), "safetensors ", path, ": tensor \"", t.name,
          "\" has an invalid shape ", shape_text(t.shape));
    check(bytes == 0 || t.data != nullptr, "safetensors ", path, ": tensor \"", t.name,
          "\" has no data");
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    sizes.push_back(bytes);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("safetensors ", path, ": cannot encode the header (", e.what(),
         "): tensor names and metadata must be valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t n = text.size();
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));

  AtomicFileWriter out(path, "safetensors");
  out.write(len, 8);
  out.write(text.data(), text.size());
  for (size_t i = 0; i < tensors.size(); ++i) out.write(tensors[i].data, sizes[i]);
  out.commit();
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.file_ = MappedFile::open(path, "safetensors");
  f.parse(f.file_.data(), f.file_.size());
  return f;
}

SafetensorsFile SafetensorsFile::from_bytes(const uint8_t* bytes, size_t size,
                                            const std::string& name) {
  SafetensorsFile f;
  f.path_ = name;
  f.owned_.assign(bytes, bytes + size);
  f.parse(f.owned_.data(), f.owned_.size());
  return f;
}

void SafetensorsFile::parse(const uint8_t* bytes, uint64_t size) {
  const std::string& path = path_;
  const char* hint = " (an interrupted write or copy? re-create or re-copy it)";
  check(size >= 8, "safetensors ", path, ": file is ", size,
        " bytes, too short for the 8-byte header length: not a safetensors file", hint);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(bytes[i]) << (8 * i);
  check(n <= size - 8, "safetensors ", path, ": header length ", n, " goes beyond the file (",
        size, " bytes): truncated, or not a safetensors file", hint);
  const char* text = reinterpret_cast<const char*>(bytes + 8);
  nlohmann::json header;
  try {
    header = parse_json(std::string_view(text, n));
  } catch (const nlohmann::json::exception& e) {
    fail("safetensors ", path, ": header is not valid JSON (", e.what(),
         "): not a safetensors file, or a corrupt one", hint);
  }
  check(header.is_object(), "safetensors ", path, ": header is JSON but not an object");
  data_start_ = bytes + 8 + n;
  const uint64_t data_size = size - 8 - n;

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") {
      check(e.is_object(), "safetensors ", path, ": __metadata__ is not a JSON object");
      for (const auto& [k, v] : e.items()) {
        check(v.is_string(), "safetensors ", path, ": __metadata__ value of \"", k,
              "\" is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = "safetensors " + path + ": tensor \"" + name + "\"";
    check(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"),
          where, ": needs an object with dtype, shape and data_offsets");
    check(e["dtype"].is_string(), where, ": dtype is not a string");
    Entry t;
    t.dtype = safetensors_dtype(e["dtype"].get<std::string>(), path);
    const nlohmann::json& shape = e["shape"];
    check(shape.is_array(), where, ": shape is not an array");
    for (const nlohmann::json& d : shape) {
      check(d.is_number_integer() && d.get<int64_t>() >= 0, where, ": shape ", shape.dump(),
            " has an entry that is not a non-negative integer");
      t.shape.push_back(d.get<int64_t>());
    }
    const nlohmann::json& off = e["data_offsets"];
    check(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
              off[1].is_number_unsigned(),
          where, ": data_offsets ", off.dump(), " is not [begin, end]");
    t.begin = off[0].get<uint64_t>();
    t.end = off[1].get<uint64_t>();
    check(t.begin <= t.end && t.end <= data_size, where, ": data_offsets [", t.begin, ", ", t.end,
          "] lie outside the ", data_size, " data bytes: truncated or corrupt file", hint);
    uint64_t bytes = 0;
    check(tensor_bytes(t.shape, t.dtype, &bytes) && bytes == t.end - t.begin, where, ": ",
          dtype_name(t.dtype), " ", shape_text(t.shape), " needs ", bytes, " bytes but data_offsets [",
          t.begin, ", ", t.end, "] hold ", t.end - t.begin, ": corrupt header");
    ranges.emplace_back(t.begin, t.end);
    tensors_.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    check(ranges[i].first >= ranges[i - 1].second, "safetensors ", path, ": data ranges [",
          ranges[i - 1].first, ", ", ranges[i - 1].second, ") and [", ranges[i].first, ", ",
          ranges[i].second, ") overlap: corrupt header");
}

SafetensorsFile::View SafetensorsFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    std::string some;
    int k = 0;
    for (const auto& [n, e] : tensors_) {
      if (k == 8) {
        some += ", ...";
        break;
      }
      some += (k++ ? ", " : "") + n;
    }
    fail("safetensors ", path(), ": no tensor \"", name, "\" (it has ", tensors_.size(),
         " tensors: ", some.empty() ? "none" : some,
         "; was it written by a model of another shape or version?)");
  }
  const Entry& e = it->second;
  return View{e.dtype, e.shape, data_start_ + e.begin, size_t(e.end - e.begin)};
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> order;
  for (const auto& [n, e] : tensors_) order.emplace_back(e.begin, e.end, n);
  std::sort(order.begin(), order.end());  // an empty tensor sorts before one at its offset
  std::vector<std::string> out;
  for (auto& [b, e, n] : order) out.push_back(std::move(n));
  return out;
}

}  // namespace speedrun
