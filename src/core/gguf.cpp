#include "core/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "core/files.h"

namespace kiln::gguf {

Value Value::str(std::string v) {
  Value x;
  x.type = ValueType::STRING;
  x.s = std::move(v);
  return x;
}
Value Value::u32(uint32_t v) {
  Value x;
  x.type = ValueType::U32;
  x.i = v;
  return x;
}
Value Value::i32(int32_t v) {
  Value x;
  x.type = ValueType::I32;
  x.i = v;
  return x;
}
Value Value::f32(float v) {
  Value x;
  x.type = ValueType::F32;
  x.f = v;
  return x;
}
Value Value::boolean(bool v) {
  Value x;
  x.type = ValueType::BOOL;
  x.b = v;
  return x;
}
Value Value::string_array(std::vector<std::string> v) {
  Value x;
  x.type = ValueType::ARRAY;
  x.elem = ValueType::STRING;
  x.strings = std::move(v);
  return x;
}
Value Value::f32_array(std::vector<double> v) {
  Value x;
  x.type = ValueType::ARRAY;
  x.elem = ValueType::F32;
  x.floats = std::move(v);
  return x;
}
Value Value::i32_array(std::vector<int64_t> v) {
  Value x;
  x.type = ValueType::ARRAY;
  x.elem = ValueType::I32;
  x.ints = std::move(v);
  return x;
}

namespace {

// ggml's type table (ggml.c type_traits: blck_size, type_size). Numbers retired from ggml (4, 5,
// 31-33, 36-38) stay unknown.
struct TypeRow {
  uint32_t id;
  const char* name;
  uint64_t block, bytes;
};
constexpr TypeRow kTypes[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},        {2, "Q4_0", 32, 18},      {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},     {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 40},
    {10, "Q2_K", 256, 84},    {11, "Q3_K", 256, 110},  {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},  {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},  {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82},   {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},        {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},       {28, "F64", 1, 8},        {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},  {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},
};

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::U8: return "uint8";
    case ValueType::I8: return "int8";
    case ValueType::U16: return "uint16";
    case ValueType::I16: return "int16";
    case ValueType::U32: return "uint32";
    case ValueType::I32: return "int32";
    case ValueType::F32: return "float32";
    case ValueType::BOOL: return "bool";
    case ValueType::STRING: return "string";
    case ValueType::ARRAY: return "array";
    case ValueType::U64: return "uint64";
    case ValueType::I64: return "int64";
    case ValueType::F64: return "float64";
  }
  return "?";
}

bool is_integer(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::U16: case ValueType::I16:
    case ValueType::U32: case ValueType::I32: case ValueType::U64: case ValueType::I64: return true;
    default: return false;
  }
}

// A bounds-checked little-endian cursor over the mapping; every overrun names the file.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* p, size_t n) : path_(path), p_(p), n_(n) {}
  size_t pos() const { return pos_; }
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const char* what) {
    const uint64_t len = get<uint64_t>(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(len));
    pos_ += size_t(len);
    return s;
  }
  void need(uint64_t n, const char* what) const {
    if (n > n_ - pos_) input_error("{}: not a valid GGUF file ({} at byte {} runs past the end, {} bytes)", path_, what, pos_, n_);
  }

 private:
  const std::string& path_;
  const uint8_t* p_;
  size_t n_, pos_ = 0;
};

ValueType value_type(Cursor& c, const std::string& path, const std::string& key) {
  const uint32_t t = c.get<uint32_t>("a value type");
  if (t > uint32_t(ValueType::F64)) input_error("{}: metadata `{}` has unknown value type {}", path, key, t);
  return ValueType(t);
}

int64_t read_integer(Cursor& c, ValueType t) {
  switch (t) {
    case ValueType::U8: return c.get<uint8_t>("a uint8");
    case ValueType::I8: return c.get<int8_t>("an int8");
    case ValueType::U16: return c.get<uint16_t>("a uint16");
    case ValueType::I16: return c.get<int16_t>("an int16");
    case ValueType::U32: return c.get<uint32_t>("a uint32");
    case ValueType::I32: return c.get<int32_t>("an int32");
    case ValueType::U64: return int64_t(c.get<uint64_t>("a uint64"));
    case ValueType::I64: return c.get<int64_t>("an int64");
    case ValueType::BOOL: return c.get<uint8_t>("a bool") != 0;
    default: KILN_CHECK(false, "not an integer type");
  }
}

Value read_value(Cursor& c, ValueType t, const std::string& path, const std::string& key) {
  Value v;
  v.type = t;
  if (t == ValueType::STRING) {
    v.s = c.string("a string");
  } else if (t == ValueType::F32) {
    v.f = c.get<float>("a float32");
  } else if (t == ValueType::F64) {
    v.f = c.get<double>("a float64");
  } else if (t == ValueType::BOOL) {
    v.b = c.get<uint8_t>("a bool") != 0;
    v.i = v.b;
  } else if (t == ValueType::ARRAY) {
    v.elem = value_type(c, path, key);
    const uint64_t n = c.get<uint64_t>("an array length");
    c.need(n, "an array");  // at least one byte per item: refuses absurd lengths before reserving
    if (v.elem == ValueType::STRING) {
      v.strings.reserve(n);
      for (uint64_t i = 0; i < n; ++i) v.strings.push_back(c.string("a string"));
    } else if (v.elem == ValueType::F32 || v.elem == ValueType::F64) {
      v.floats.reserve(n);
      for (uint64_t i = 0; i < n; ++i)
        v.floats.push_back(v.elem == ValueType::F32 ? c.get<float>("a float32") : c.get<double>("a float64"));
    } else if (is_integer(v.elem) || v.elem == ValueType::BOOL) {
      v.ints.reserve(n);
      for (uint64_t i = 0; i < n; ++i) v.ints.push_back(read_integer(c, v.elem));
    } else {
      input_error("{}: metadata `{}` is an array of {}: kiln reads arrays of strings, numbers and booleans", path, key,
                  value_type_name(v.elem));
    }
  } else {
    v.i = read_integer(c, t);
  }
  return v;
}

}  // namespace

TypeInfo type_info(uint32_t type) {
  for (const auto& r : kTypes)
    if (r.id == type) return {true, r.name, r.block, r.bytes};
  return {};
}

std::string type_name(uint32_t type) {
  TypeInfo i = type_info(type);
  return i.known ? i.name : "type " + std::to_string(type);
}

int64_t type_from_name(const std::string& name) {
  std::string up;
  for (char ch : name) up += char(std::toupper(static_cast<unsigned char>(ch)));
  for (const auto& r : kTypes)
    if (up == r.name) return r.id;
  return -1;
}

uint64_t Tensor::elements() const {
  uint64_t n = 1;
  for (uint64_t d : ne) n *= d;
  return n;
}

File::File(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) input_error("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size < 24) {
    ::close(fd);
    input_error("{}: not a GGUF file (shorter than a GGUF header)", path);
  }
  map_size_ = size_t(st.st_size);
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    input_error("{}: cannot map: {}", path, std::strerror(errno));
  }
  const auto* bytes = static_cast<const uint8_t*>(map_);
  if (std::memcmp(bytes, "GGUF", 4) != 0) input_error("{}: not a GGUF file (no GGUF magic)", path);
  Cursor c(path_, bytes, map_size_);
  c.get<uint32_t>("the magic");
  version_ = c.get<uint32_t>("the version");
  // Version 1 used 32-bit counts and lengths; it predates every model users hold today.
  if (version_ < 2 || version_ > 3) input_error("{}: GGUF version {} (kiln reads versions 2 and 3)", path, version_);
  const uint64_t n_tensors = c.get<uint64_t>("the tensor count");
  const uint64_t n_kv = c.get<uint64_t>("the metadata count");
  c.need(n_kv, "the metadata");
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.string("a metadata key");
    ValueType t = value_type(c, path_, key);
    Value v = read_value(c, t, path_, key);
    if (!kv_.emplace(key, std::move(v)).second) input_error("{}: metadata key `{}` appears twice", path, key);
  }
  c.need(n_tensors, "the tensor directory");
  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    Tensor t;
    t.name = c.string("a tensor name");
    const uint32_t nd = c.get<uint32_t>("a tensor's dimension count");
    if (nd == 0 || nd > 4) input_error("{}: tensor `{}` has {} dimensions (GGUF allows 1 to 4)", path, t.name, nd);
    for (uint32_t d = 0; d < nd; ++d) t.ne.push_back(c.get<uint64_t>("a tensor dimension"));
    t.type = c.get<uint32_t>("a tensor type");
    t.offset = c.get<uint64_t>("a tensor offset");
    const TypeInfo ti = type_info(t.type);
    if (!ti.known) input_error("{}: tensor `{}` has unknown tensor type {}", path, t.name, t.type);
    if (t.ne[0] % ti.block != 0)
      input_error("{}: tensor `{}` has rows of {} elements, not a multiple of {}'s block of {}", path, t.name, t.ne[0],
                  ti.name, ti.block);
    t.nbytes = t.elements() / ti.block * ti.bytes;
    tensors_.push_back(std::move(t));
  }
  uint64_t alignment = 32;
  if (const Value* a = find("general.alignment")) {
    if (!is_integer(a->type) || a->i <= 0 || (a->i & (a->i - 1)) != 0)
      input_error("{}: general.alignment must be a power of two", path);
    alignment = uint64_t(a->i);
  }
  const uint64_t start = (c.pos() + alignment - 1) / alignment * alignment;
  if (start > map_size_) input_error("{}: not a valid GGUF file (no data section)", path);
  data_ = bytes + start;
  const uint64_t data_size = map_size_ - start;
  for (const auto& t : tensors_)
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      input_error("{}: tensor `{}` ({} bytes at offset {}) runs past the end of the file (truncated download?)", path,
                  t.name, t.nbytes, t.offset);
}

File::~File() {
  if (map_) ::munmap(map_, map_size_);
}

const Tensor* File::find_tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const Value* File::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

namespace {
const Value& need(const File& f, const std::string& key) {
  const Value* v = f.find(key);
  if (!v) input_error("{}: metadata `{}` is missing", f.path(), key);
  return *v;
}
[[noreturn]] void wrong(const File& f, const std::string& key, const Value& v, const char* want) {
  input_error("{}: metadata `{}` is {} where {} was expected", f.path(), key,
              v.type == ValueType::ARRAY ? std::string("an array of ") + value_type_name(v.elem) : value_type_name(v.type),
              want);
}
}  // namespace

std::string File::str(const std::string& key) const {
  const Value& v = need(*this, key);
  if (v.type != ValueType::STRING) wrong(*this, key, v, "a string");
  return v.s;
}

int64_t File::integer(const std::string& key) const {
  const Value& v = need(*this, key);
  if (!is_integer(v.type)) wrong(*this, key, v, "an integer");
  return v.i;
}

double File::number(const std::string& key) const {
  const Value& v = need(*this, key);
  if (is_integer(v.type)) return double(v.i);
  if (v.type == ValueType::F32 || v.type == ValueType::F64) return v.f;
  wrong(*this, key, v, "a number");
}

bool File::flag(const std::string& key) const {
  const Value& v = need(*this, key);
  if (v.type != ValueType::BOOL) wrong(*this, key, v, "a bool");
  return v.b;
}

const std::vector<std::string>& File::strings(const std::string& key) const {
  const Value& v = need(*this, key);
  if (v.type != ValueType::ARRAY || v.elem != ValueType::STRING) wrong(*this, key, v, "an array of strings");
  return v.strings;
}

const std::vector<int64_t>& File::ints(const std::string& key) const {
  const Value& v = need(*this, key);
  if (v.type != ValueType::ARRAY || !(is_integer(v.elem) || v.elem == ValueType::BOOL))
    wrong(*this, key, v, "an array of integers");
  return v.ints;
}

const std::vector<double>& File::floats(const std::string& key) const {
  const Value& v = need(*this, key);
  if (v.type != ValueType::ARRAY || !(v.elem == ValueType::F32 || v.elem == ValueType::F64))
    wrong(*this, key, v, "an array of floats");
  return v.floats;
}

std::string File::str_or(const std::string& key, const std::string& def) const { return has(key) ? str(key) : def; }
int64_t File::integer_or(const std::string& key, int64_t def) const { return has(key) ? integer(key) : def; }
double File::number_or(const std::string& key, double def) const { return has(key) ? number(key) : def; }
bool File::flag_or(const std::string& key, bool def) const { return has(key) ? flag(key) : def; }

const uint8_t* File::data(const Tensor& t) const { return data_ + t.offset; }

// ---- writer ----

void Writer::set(const std::string& key, Value v) {
  for (auto& [k, old] : kv_)
    if (k == key) {
      old = std::move(v);
      return;
    }
  kv_.emplace_back(key, std::move(v));
}

void Writer::add_tensor(const std::string& name, uint32_t type, std::vector<uint64_t> ne,
                        std::function<std::vector<uint8_t>()> produce) {
  const TypeInfo ti = type_info(type);
  KILN_CHECK(ti.known, "tensor {}: unknown type {}", name, type);
  KILN_CHECK(!ne.empty() && ne.size() <= 4, "tensor {}: {} dimensions", name, ne.size());
  KILN_CHECK(ne[0] % ti.block == 0, "tensor {}: rows of {} are not whole {} blocks", name, ne[0], ti.name);
  for (const auto& p : tensors_) KILN_CHECK(p.t.name != name, "tensor {} added twice", name);
  Pending p;
  p.t.name = name;
  p.t.type = type;
  p.t.ne = std::move(ne);
  p.t.nbytes = p.t.elements() / ti.block * ti.bytes;
  p.produce = std::move(produce);
  tensors_.push_back(std::move(p));
}

namespace {

void put_raw(std::string& out, const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }
template <typename T>
void put(std::string& out, T v) {
  put_raw(out, &v, sizeof v);
}
void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  put_raw(out, s.data(), s.size());
}

void put_scalar(std::string& out, ValueType t, const Value& v, size_t index, bool in_array) {
  // Only integer and bool arrays keep their items in `ints`.
  const int64_t i = !in_array ? v.i : index < v.ints.size() ? v.ints[index] : 0;
  switch (t) {
    case ValueType::U8: put<uint8_t>(out, uint8_t(i)); break;
    case ValueType::I8: put<int8_t>(out, int8_t(i)); break;
    case ValueType::U16: put<uint16_t>(out, uint16_t(i)); break;
    case ValueType::I16: put<int16_t>(out, int16_t(i)); break;
    case ValueType::U32: put<uint32_t>(out, uint32_t(i)); break;
    case ValueType::I32: put<int32_t>(out, int32_t(i)); break;
    case ValueType::U64: put<uint64_t>(out, uint64_t(i)); break;
    case ValueType::I64: put<int64_t>(out, i); break;
    case ValueType::BOOL: put<uint8_t>(out, in_array ? uint8_t(i != 0) : uint8_t(v.b)); break;
    case ValueType::F32: put<float>(out, float(in_array ? v.floats[index] : v.f)); break;
    case ValueType::F64: put<double>(out, in_array ? v.floats[index] : v.f); break;
    case ValueType::STRING: put_string(out, in_array ? v.strings[index] : v.s); break;
    case ValueType::ARRAY: KILN_CHECK(false, "nested arrays are not written");
  }
}

}  // namespace

void Writer::write(const std::string& path, uint32_t alignment) const {
  KILN_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0, "alignment {} is not a power of two", alignment);
  std::string head;
  head.append("GGUF", 4);
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  const bool custom_alignment = alignment != 32;
  put<uint64_t>(head, kv_.size() + (custom_alignment ? 1 : 0));
  auto put_kv = [&](const std::string& key, const Value& v) {
    put_string(head, key);
    put<uint32_t>(head, uint32_t(v.type));
    if (v.type != ValueType::ARRAY) {
      put_scalar(head, v.type, v, 0, false);
      return;
    }
    put<uint32_t>(head, uint32_t(v.elem));
    const size_t n = v.elem == ValueType::STRING                                ? v.strings.size()
                     : (v.elem == ValueType::F32 || v.elem == ValueType::F64) ? v.floats.size()
                                                                                : v.ints.size();
    put<uint64_t>(head, n);
    for (size_t i = 0; i < n; ++i) put_scalar(head, v.elem, v, i, true);
  };
  for (const auto& [k, v] : kv_) put_kv(k, v);
  if (custom_alignment) put_kv("general.alignment", Value::u32(alignment));
  uint64_t off = 0;
  std::vector<uint64_t> offsets;
  for (const auto& p : tensors_) {
    put_string(head, p.t.name);
    put<uint32_t>(head, uint32_t(p.t.ne.size()));
    for (uint64_t d : p.t.ne) put<uint64_t>(head, d);
    put<uint32_t>(head, p.t.type);
    put<uint64_t>(head, off);
    offsets.push_back(off);
    off = (off + p.t.nbytes + alignment - 1) / alignment * alignment;
  }
  head.append((alignment - head.size() % alignment) % alignment, '\0');

  write_file_atomic(path, [&](const PutBytes& put) {
    put(head.data(), head.size());
    uint64_t written = 0;
    static const char zeros[256] = {};
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const auto& p = tensors_[i];
      for (; written < offsets[i];) {  // alignment padding
        const size_t n = size_t(std::min<uint64_t>(sizeof zeros, offsets[i] - written));
        put(zeros, n);
        written += n;
      }
      const std::vector<uint8_t> bytes = p.produce();
      KILN_CHECK(bytes.size() == p.t.nbytes, "tensor {}: {} bytes produced, {} expected", p.t.name, bytes.size(),
                 p.t.nbytes);
      put(bytes.data(), bytes.size());
      written += bytes.size();
    }
  });
}

}  // namespace kiln::gguf
