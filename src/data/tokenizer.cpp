#include "data/tokenizer.h"

#include <dlfcn.h>

#include <filesystem>
#include <mutex>

#include "core/error.h"
#include "core/hash.h"
#include "data/tokenizer_impl.h"

namespace fs = std::filesystem;

#if defined(__SANITIZE_ADDRESS__)
#define KILN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KILN_ASAN 1
#endif
#endif

// In the deep-bound shim (open_shim below), sentencepiece's operator new and delete bind to different
// definitions of the same allocator, which ASan would report as a mismatch on every load.
#ifdef KILN_ASAN
extern "C" const char* __asan_default_options() { return "alloc_dealloc_mismatch=0"; }
#endif

namespace kiln::data {
namespace {

struct Shim {
  void* (*load)(const char*, char*, int64_t);
  void (*free)(void*);
  int64_t (*encode)(void*, const char*, int64_t, int32_t*, int64_t);
  int64_t (*decode)(void*, const int32_t*, int64_t, char*, int64_t);
  int64_t (*piece)(void*, int32_t, char*, int64_t);
  int32_t (*piece_to_id)(void*, const char*, int64_t);
  float (*score)(void*, int32_t);
  int32_t (*info)(void*, int32_t);
  int32_t (*kind)(void*, int32_t);
  int64_t (*serialized)(void*, char*, int64_t);
};

// The sanitizers' dlopen refuses RTLD_DEEPBIND outright (google/sanitizers#611: a deep-bound library
// could call libc's malloc and free what ASan allocated). The shim itself is not instrumented and
// keeps every allocation on its own side of the C interface, so sanitized builds call libc's dlopen.
void* open_shim(const char* path, int flags) {
#ifdef KILN_ASAN
  using DlopenFn = void* (*)(const char*, int);
  static auto real = reinterpret_cast<DlopenFn>(dlsym(RTLD_NEXT, "dlopen"));
  if (real) return real(path, flags);
#endif
  return dlopen(path, flags);
}

const Shim& shim() {
  static Shim s;
  static std::once_flag once;
  std::call_once(once, [] {
    const char* env = std::getenv("KILN_SPM_SHIM");
    std::string path = env && *env ? env : KILN_SPM_SHIM_PATH;
    // RTLD_DEEPBIND: sentencepiece resolves protobuf symbols to its own bundled copy first.
    void* so = open_shim(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!so) throw InternalError(fmt::format("cannot load the sentencepiece shim {}: {}", path, dlerror()));
    auto sym = [&](const char* name) {
      void* f = dlsym(so, name);
      if (!f) throw InternalError(fmt::format("{}: missing symbol {}", path, name));
      return f;
    };
    s.load = reinterpret_cast<decltype(s.load)>(sym("kiln_spm_load"));
    s.free = reinterpret_cast<decltype(s.free)>(sym("kiln_spm_free"));
    s.encode = reinterpret_cast<decltype(s.encode)>(sym("kiln_spm_encode"));
    s.decode = reinterpret_cast<decltype(s.decode)>(sym("kiln_spm_decode"));
    s.piece = reinterpret_cast<decltype(s.piece)>(sym("kiln_spm_piece"));
    s.piece_to_id = reinterpret_cast<decltype(s.piece_to_id)>(sym("kiln_spm_piece_to_id"));
    s.score = reinterpret_cast<decltype(s.score)>(sym("kiln_spm_score"));
    s.info = reinterpret_cast<decltype(s.info)>(sym("kiln_spm_info"));
    s.kind = reinterpret_cast<decltype(s.kind)>(sym("kiln_spm_kind"));
    s.serialized = reinterpret_cast<decltype(s.serialized)>(sym("kiln_spm_serialized"));
  });
  return s;
}

// Calls f(buffer, capacity) -> needed size, growing the buffer once when it was too small.
template <typename F>
std::string read_string(F f) {
  std::string out(64, '\0');
  int64_t n = f(out.data(), int64_t(out.size()));
  if (n > int64_t(out.size())) {
    out.resize(size_t(n));
    n = f(out.data(), n);
  }
  out.resize(size_t(n));
  return out;
}

class SpmTokenizer final : public Tokenizer::Impl {
 public:
  explicit SpmTokenizer(const std::string& path) : path_(path) {
    char err[512] = {0};
    sp_ = shim().load(path.c_str(), err, sizeof(err));
    if (!sp_) input_error("{}: not a sentencepiece model: {}", path, err);
    auto& s = shim();
    bos = s.info(sp_, 1);
    eos = s.info(sp_, 2);
    pad = s.info(sp_, 3);
  }
  ~SpmTokenizer() override { shim().free(sp_); }
  std::string kind() const override { return "sentencepiece"; }
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids(text.size() + 16);
    int64_t n = shim().encode(sp_, text.data(), int64_t(text.size()), ids.data(), int64_t(ids.size()));
    if (n > int64_t(ids.size())) {
      ids.resize(size_t(n));
      n = shim().encode(sp_, text.data(), int64_t(text.size()), ids.data(), n);
    }
    if (n < 0) input_error("{}: sentencepiece cannot encode with this model (damaged?)", path_);
    ids.resize(size_t(n));
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    return read_string([&](char* out, int64_t cap) { return shim().decode(sp_, ids.data(), int64_t(ids.size()), out, cap); });
  }
  std::string piece(int32_t id) const override {
    return read_string([&](char* out, int64_t cap) { return shim().piece(sp_, id, out, cap); });
  }
  int32_t piece_to_id(const std::string& p) const override { return shim().piece_to_id(sp_, p.data(), int64_t(p.size())); }
  int32_t vocab_size() const override { return shim().info(sp_, 0); }
  int32_t unk_id() const override { return shim().info(sp_, 4); }
  float score(int32_t id) const override { return shim().score(sp_, id); }
  bool is_byte(int32_t id) const override { return shim().kind(sp_, id) == 1; }
  bool is_special(int32_t id) const override { return shim().kind(sp_, id) == 2; }
  std::string serialized() const override {
    return read_string([&](char* out, int64_t cap) { return shim().serialized(sp_, out, cap); });
  }

 private:
  std::string path_;
  void* sp_ = nullptr;
};

}  // namespace

Tokenizer::Tokenizer(const std::string& path) {
  fs::path p = path;
  if (fs::is_directory(p)) {
    if (fs::exists(p / "tokenizer.model"))
      p /= "tokenizer.model";
    else if (fs::exists(p / "tokenizer.json"))
      p /= "tokenizer.json";
    else
      input_error("{}: no tokenizer.model or tokenizer.json in the folder", path);
  }
  path_ = p.string();
  if (!fs::exists(p)) input_error("{}: tokenizer file not found", path_);
  if (p.extension() == ".json")
    impl_ = load_bpe_json(path_);
  else
    impl_ = std::make_unique<SpmTokenizer>(path_);
  std::string blob = impl_->serialized();
  checksum_ = sha256_hex(blob.data(), blob.size());
  bos_ = impl_->bos;
  eos_ = impl_->eos;
  // LLaMA's tokenizers have no pad token: pad with EOS, always masked.
  pad_ = impl_->pad >= 0 ? impl_->pad : eos_;
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos, bool add_eos) const {
  std::vector<int32_t> ids = impl_->encode(text);
  // A tokenizer without a BOS or EOS token (-1) adds none, as Hugging Face's do.
  if (add_bos && adds_bos_ && bos_ >= 0) ids.insert(ids.begin(), bos_);
  if (add_eos && eos_ >= 0) ids.push_back(eos_);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const { return impl_->decode(ids); }
std::string Tokenizer::piece(int32_t id) const { return impl_->piece(id); }
int32_t Tokenizer::piece_to_id(const std::string& piece) const { return impl_->piece_to_id(piece); }
int32_t Tokenizer::vocab_size() const { return impl_->vocab_size(); }
int32_t Tokenizer::unk_id() const { return impl_->unk_id(); }
std::string Tokenizer::kind() const { return impl_->kind(); }
float Tokenizer::score(int32_t id) const { return impl_->score(id); }
bool Tokenizer::is_byte(int32_t id) const { return impl_->is_byte(id); }
bool Tokenizer::is_special(int32_t id) const { return impl_->is_special(id); }
std::string Tokenizer::serialized() const { return impl_->serialized(); }

void Tokenizer::set_special_ids(int32_t bos, int32_t eos, int32_t pad) {
  bos_ = bos;
  eos_ = eos;
  pad_ = pad;
}

}  // namespace kiln::data
