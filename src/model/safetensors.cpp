#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/files.h"

namespace kiln::model {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

at::ScalarType scalar_type(const std::string& dt) {
  if (dt == "F32") return at::kFloat;
  if (dt == "F16") return at::kHalf;
  if (dt == "BF16") return at::kBFloat16;
  if (dt == "F64") return at::kDouble;
  if (dt == "I64") return at::kLong;
  if (dt == "I32") return at::kInt;
  if (dt == "I16") return at::kShort;
  if (dt == "I8") return at::kChar;
  if (dt == "U8") return at::kByte;
  if (dt == "BOOL") return at::kBool;
  return at::ScalarType::Undefined;
}

}  // namespace

std::string shape_str(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string safetensors_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kDouble: return "F64";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    default: KILN_CHECK(false, "no safetensors dtype for {}", c10::toString(t.scalar_type()));
  }
}

SafeTensorsFile::SafeTensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) input_error("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size < 8) {
    ::close(fd);
    input_error("{}: not a safetensors file (shorter than its 8-byte header length)", path);
  }
  map_size_ = size_t(st.st_size);
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file open
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    input_error("{}: cannot map: {}", path, std::strerror(errno));
  }
  const auto* bytes = static_cast<const uint8_t*>(map_);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > map_size_ - 8) input_error("{}: not a safetensors file (header length {} exceeds the file)", path, n);
  json h;
  try {
    h = json::parse(bytes + 8, bytes + 8 + n);
  } catch (const json::exception& e) {
    input_error("{}: not a safetensors file (bad JSON header: {})", path, e.what());
  }
  if (!h.is_object()) input_error("{}: safetensors header is not a JSON object", path);
  data_ = bytes + 8 + n;
  const uint64_t data_size = map_size_ - 8 - n;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it->is_object())
        for (auto m = it->begin(); m != it->end(); ++m)
          if (m->is_string()) metadata_[m.key()] = m->get<std::string>();
      continue;
    }
    Entry e;
    try {
      e.dtype = it->at("dtype").get<std::string>();
      e.shape = it->at("shape").get<std::vector<int64_t>>();
      auto off = it->at("data_offsets").get<std::vector<uint64_t>>();
      if (off.size() != 2) throw std::runtime_error("data_offsets must hold two numbers");
      e.begin = off[0];
      e.end = off[1];
    } catch (const std::exception& ex) {
      input_error("{}: tensor `{}`: bad header entry: {}", path, it.key(), ex.what());
    }
    const auto st_type = scalar_type(e.dtype);
    if (st_type == at::ScalarType::Undefined)
      input_error("{}: tensor `{}` has dtype {}; supported: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL", path,
                  it.key(), e.dtype);
    uint64_t numel = 1;
    for (int64_t d : e.shape) {
      if (d < 0) input_error("{}: tensor `{}` has a negative dimension", path, it.key());
      numel *= uint64_t(d);
    }
    if (e.end < e.begin || e.end > data_size || e.end - e.begin != numel * c10::elementSize(st_type))
      input_error("{}: tensor `{}` ({} {}) has data offsets [{}, {}] that do not fit its size or the file "
                  "(truncated download?)",
                  path, it.key(), e.dtype, shape_str(e.shape), e.begin, e.end);
    entries_.emplace(it.key(), std::move(e));
  }
}

SafeTensorsFile::~SafeTensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const SafeTensorsFile::Entry& SafeTensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) input_error("{}: has no tensor `{}`", path_, name);
  return it->second;
}

at::Tensor SafeTensorsFile::view(const std::string& name) const {
  const Entry& e = entry(name);
  // from_blob needs a non-const pointer; the mapping is read-only, and nothing here writes to it.
  void* p = const_cast<uint8_t*>(data_ + e.begin);
  return at::from_blob(p, e.shape, at::TensorOptions().dtype(scalar_type(e.dtype)).device(at::kCPU));
}

at::Tensor SafeTensorsFile::load(const std::string& name) const { return view(name).clone(); }

void SafeTensorsFile::copy_into(const std::string& name, at::Tensor dst, const std::string& expected_by) const {
  const Entry& e = entry(name);
  if (at::IntArrayRef(e.shape) != dst.sizes())
    input_error("{}: tensor `{}` has shape {}, {} expects {}", path_, name, shape_str(e.shape), expected_by,
                shape_str(dst.sizes()));
  at::NoGradGuard no_grad;
  dst.copy_(view(name));
}

void write_safetensors(const std::string& path, const NamedTensorList& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    KILN_CHECK(t.defined(), "tensor {} is undefined", name);
    KILN_CHECK(!h.contains(name), "tensor {} written twice", name);
    const uint64_t n = uint64_t(t.numel()) * t.element_size();
    h[name] = {{"dtype", safetensors_dtype(t)}, {"shape", t.sizes().vec()}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string header = h.dump();
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  header.append((8 - (8 + header.size()) % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t((uint64_t(header.size()) >> (8 * i)) & 0xff);
  write_file_atomic(path, [&](const PutBytes& put) {
    put(len, 8);
    put(header.data(), header.size());
    for (const auto& [name, t] : tensors) {
      at::Tensor c = t.detach().to(at::kCPU).contiguous();
      put(c.data_ptr(), size_t(c.numel()) * c.element_size());
    }
  });
}

}  // namespace kiln::model
